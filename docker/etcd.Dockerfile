# etcd for the compose `cluster` profile, from Debian's package, for users
# with a container registry. Without one, scripts/build-etcd-image-offline.sh
# makes the same image (name, binaries, user, paths) from the same package.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 etcd-data \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin etcd-data \
 && mkdir -p /data && chown 10001:10001 /data && chmod 700 /data
USER 10001
WORKDIR /data
ENV ETCDCTL_API=3
VOLUME /data
EXPOSE 2379 2380
CMD ["etcd", "--data-dir=/data"]
