# Environment image: a virtualenv holding the model's and the server's dependencies.
# Built with the network off from wheels the client resolved (wheels/), in a build stage, so the
# final image carries no wheels. Packages' own test suites are left out (a fifth of the size;
# nothing imports them when serving). Keyed by a hash of everything that goes in, built once.
# Legacy-builder syntax only: the engine may have no BuildKit.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
LABEL io.mlflow.dockerhost.stage=build
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-index --disable-pip-version-check \
      --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
      $( [ -f /tmp/wheels/constraints.txt ] && echo "-c /tmp/wheels/constraints.txt" ) \
 && /opt/venv/bin/python -m pip uninstall --yes --disable-pip-version-check pip \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
