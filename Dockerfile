# The image for users with a container registry: build in the official Rust
# image, run in Debian slim as a non-root user. Without a registry, use
# scripts/build-image-offline.sh, which makes the same image (same name,
# binaries, user, paths) from binaries built on the host.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/bootstrap-svc target/release/node-svc target/release/p2pctl /out/ \
 && strip /out/*

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 p2p \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin p2p \
 && mkdir -p /data && chown p2p:p2p /data
COPY --from=build /out/ /usr/local/bin/
USER 10001
WORKDIR /data
VOLUME /data
EXPOSE 3000 4000
CMD ["node-svc"]
