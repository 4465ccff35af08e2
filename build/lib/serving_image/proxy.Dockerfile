# A Debian base with HAProxy for the endpoints' fronts, made from Debian packages with no
# registry: rootfs.tar comes from mmdebstrap (see mlflow_docker_target/base_image.py). The
# plugin supplies the command and the configuration, as it does for the official haproxy image.
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
USER haproxy
CMD ["haproxy", "-v"]
