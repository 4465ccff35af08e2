# Model image: the environment image plus the server and the model; a new model version with the
# same requirements builds only these few layers. Runs as a non-root user.
ARG ENV_IMAGE
FROM ${ENV_IMAGE}
COPY server/ /opt/mlflow-server/
COPY model/ /opt/ml/model/
ENV PYTHONPATH=/opt/mlflow-server \
    MLFLOW_MODEL_PATH=/opt/ml/model \
    SERVER_PORT=8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python3", "-m", "serving_image.healthcheck"]
CMD ["python3", "-m", "serving_image"]
