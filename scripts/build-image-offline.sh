#!/usr/bin/env bash
# Builds the compose image with nothing pulled from a registry: the release
# binaries built on this host plus exactly the shared libraries they link
# (glibc, libgcc), a passwd entry for the non-root user and an owned /data,
# imported with `docker import`. Same name, user, paths and command as the
# Dockerfile's image, so docker-compose.yml runs either one.
#
# usage: scripts/build-image-offline.sh [image-name]   (default p2p-chain:local)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-${P2P_IMAGE:-p2p-chain:local}}
bins=(bootstrap-svc node-svc p2pctl)

cargo build --release --locked --bins
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/data" "$root/tmp" "$root/etc"
for b in "${bins[@]}"; do
  cp "target/release/$b" "$root/usr/local/bin/$b"
  strip "$root/usr/local/bin/$b"
done
# The libraries the binaries link, at the paths the loader looks for them.
for lib in $(ldd "${bins[@]/#/target/release/}" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\np2p:x:10001:10001:p2p:/data:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\np2p:x:10001:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chown 10001:10001 "$root/data"
tar -C "$root" --numeric-owner -cf - . | docker import \
  --change 'USER 10001' \
  --change 'WORKDIR /data' \
  --change 'ENV PATH=/usr/local/bin' \
  --change 'VOLUME /data' \
  --change 'EXPOSE 3000 4000' \
  --change 'CMD ["node-svc"]' \
  - "$image" >/dev/null
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
