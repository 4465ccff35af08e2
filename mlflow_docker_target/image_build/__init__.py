"""Packaging a model into its serving image, on the engine that runs it.

``model_fetch`` resolves the model URI to a version and downloads the model; ``requirements``
turns its requirements into wheels for the engine's platform; ``environment`` builds the
environment image (once per set of requirements), ``model_image`` the thin image on top, both
through ``docker_build`` (the build context and its streamed progress). ``local_images`` builds
base, proxy and binutils images from Debian packages, for engines that can pull nothing.
"""
