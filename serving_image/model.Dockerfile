# Model image: the environment image (which holds the dependencies, the non-root user, the
# health check and the command) plus the server and the model. A new model version with the same
# requirements builds only these layers; the plugin appends one LABEL line.
# @NAME@ stands for a fact of serving_image/contract.py; the plugin puts it in.
ARG ENV_IMAGE
FROM ${ENV_IMAGE}
COPY server/ @SERVER_PATH@/
COPY --chown=@SERVER_USER@ model/ @MODEL_PATH@/
# The inference log's directory, owned by the server's user: a new volume mounted there takes
# its owner (and this README) from the image, on whichever node it is made.
COPY --chown=@SERVER_USER@ payload-log/ @PAYLOAD_LOG_DIR@/
