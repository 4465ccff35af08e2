# GNU binutils for the environment build's strip stage (strip.sh), made from Debian packages
# with no registry: rootfs.tar comes from mmdebstrap (see mlflow_docker_target/base_image.py).
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
CMD ["sh"]
