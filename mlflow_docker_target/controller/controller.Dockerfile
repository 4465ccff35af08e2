# The controller's image: the plugin's own code in a virtualenv of its dependencies, pinned to
# the client's versions and installed with the network off from wheels the client resolved.
# Two stages, so that the image carries no wheels. Legacy-builder syntax only.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
ARG BUILD_ID
LABEL io.mlflow.dockerhost.stage=build io.mlflow.dockerhost.build=${BUILD_ID}
COPY wheels/ /tmp/wheels/
# No bytecode (it would double the image; the one process compiles what it imports once), no
# packages' test suites or C headers. pip stays: new requirements are resolved here.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-index --no-compile \
      --disable-pip-version-check --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} + \
 && find /opt/venv/lib \( -name '*.pyi' -o -name '*.h' -o -name '*.pxd' -o -name '*.pyx' \) -delete

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY src/ /opt/controller/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/controller PYTHONUNBUFFERED=1 HOME=/tmp
ENTRYPOINT ["python", "-m", "mlflow_docker_target.controller"]
