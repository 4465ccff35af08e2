# A base image plus the system packages given with -C system_packages: shared libraries that the
# model's wheels need but do not ship (libgomp1 for LightGBM, say). The one build with the
# network: the base's own package manager fetches from its archive.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG PACKAGES
ARG ENGINE
# The prefix of lines the plugin shows as the error (build_check.BUILD_ERROR).
ARG BUILD_ERROR
USER root
RUN fail() { echo "${BUILD_ERROR}Installing system packages ($PACKAGES) on the base image failed: $1"; exit 1; }; \
    offline="the engine at $ENGINE could not reach the package archive. This is the one build step that uses the network: give that engine network access (or a proxy), or use a base image that already has these packages (-C base_image=<image>) and leave system_packages out"; \
    if command -v apt-get >/dev/null; then \
      export DEBIAN_FRONTEND=noninteractive; \
      apt-get update --error-on=any || fail "$offline."; \
      apt-get install -y --no-install-recommends $PACKAGES \
        || fail "apt-get could not install them (see its output above); check the names with apt-cache search or on packages.debian.org."; \
      rm -rf /var/lib/apt/lists/*; \
    elif command -v dnf >/dev/null || command -v microdnf >/dev/null; then \
      dnf=$(command -v dnf || command -v microdnf); \
      $dnf makecache || fail "$offline."; \
      $dnf install -y $PACKAGES || fail "$dnf could not install them (see its output above)."; \
      $dnf clean all; \
    else \
      fail "the base image has neither apt-get nor dnf. Use a base image that already has them (-C base_image=<image>)."; \
    fi
