"""Reaching a Docker engine: which one the target URI, ``DOCKER_HOST`` or a context names
(``address``), a client connected to it (``connection``), the images the plugin needs on it
(``images``), what to tell the user when the engine cannot be reached (``errors``, one
table, as httpx maps its transports' errors), the options every container the plugin starts
on it is locked down with (``lockdown``), and the times it reports, read (``times``)."""
