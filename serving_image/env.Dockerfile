# Environment image: a virtualenv holding the model's and the server's dependencies.
# Built with the network off from wheels the client resolved (wheels/), in a build stage, so the
# final image carries no wheels. The build stage loads the model (build_check.py): CUDA-only
# packages are left out of CPU deployments unless the model needs them, missing shared libraries
# fail the build with their Debian packages named, and bytecode is written only for what serving
# the model imports. Packages' own test suites, C headers and type stubs are left out too. A
# strip stage on STRIP_IMAGE then takes the debug symbols out of the shared objects (strip.sh);
# it is the base image itself when no image with binutils is configured, and changes nothing.
# Keyed by a hash of everything that goes in but the model, built once.
# Legacy-builder syntax only: the engine may have no BuildKit.
# @NAME@ stands for a fact of serving_image/contract.py; the plugin puts it in.
ARG BASE_IMAGE
ARG STRIP_IMAGE
FROM ${BASE_IMAGE} AS build
ARG BUILD_ID
LABEL io.mlflow.dockerhost.stage=build io.mlflow.dockerhost.build=${BUILD_ID}
ARG KEEP_CUDA=
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-index --no-compile \
      --disable-pip-version-check --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
      $( [ -f /tmp/wheels/constraints.txt ] && echo "-c /tmp/wheels/constraints.txt" ) \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} + \
 && find /opt/venv/lib \( -name '*.pyi' -o -name '*.h' -o -name '*.pxd' -o -name '*.pyx' \) -delete
COPY server/ /tmp/server/
COPY model/ /tmp/model/
RUN HOME=/tmp PYTHONPATH=/tmp/server /opt/venv/bin/python -m serving_image.build_check \
      /tmp/model /opt/venv /tmp/wheels ${KEEP_CUDA:+--keep-cuda} \
 && /opt/venv/bin/python -m pip uninstall --yes --disable-pip-version-check pip

FROM ${STRIP_IMAGE} AS strip
ARG BUILD_ID
LABEL io.mlflow.dockerhost.stage=build io.mlflow.dockerhost.build=${BUILD_ID}
COPY --from=build /opt/venv /opt/venv
COPY server/serving_image/strip.sh /tmp/strip.sh
RUN sh /tmp/strip.sh /opt/venv

# The final stage also carries what every serving image shares, so that a model image adds
# only its few files: each instruction costs the legacy builder a container.
FROM ${BASE_IMAGE}
COPY --from=strip /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    @SCRATCH_ENV@ \
    PYTHONPATH=@SERVER_PATH@ \
    SCORING_MODEL_PATH=@MODEL_PATH@ \
    SCORING_PORT=@SERVER_PORT@
USER @SERVER_USER@
EXPOSE @SERVER_PORT@
@HEALTHCHECK@
CMD ["python3", "-m", "serving_image"]
