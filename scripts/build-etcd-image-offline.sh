#!/usr/bin/env bash
# Builds the etcd image of the compose `cluster` profile with nothing pulled
# from a container registry: etcd and etcdctl from Debian's own packages
# (etcd-server, etcd-client; fetched with `apt-get download`, never
# installed), the shared libraries they link, and an owned /data, imported
# with `docker import`. Same name and layout as docker/etcd.Dockerfile's
# image, so docker-compose.yml runs either one.
#
# usage: scripts/build-etcd-image-offline.sh [image-name]   (default p2p-etcd:local)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-${P2P_ETCD_IMAGE:-p2p-etcd:local}}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -q etcd-server etcd-client >/dev/null 2>&1) || {
  apt-get update -q >/dev/null && (cd "$work" && apt-get download -q etcd-server etcd-client >/dev/null)
}
root="$work/root"
mkdir -p "$root"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
mkdir -p "$root/usr/local/bin" "$root/data" "$root/tmp" "$root/etc"
cp "$work/x/usr/bin/etcd" "$work/x/usr/bin/etcdctl" "$root/usr/local/bin/"
for lib in $(ldd "$root/usr/local/bin/etcd" "$root/usr/local/bin/etcdctl" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\netcd:x:10001:10001:etcd:/data:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\netcd:x:10001:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chown 10001:10001 "$root/data"
chmod 700 "$root/data"
tar -C "$root" --numeric-owner -cf - . | docker import \
  --change 'USER 10001' \
  --change 'WORKDIR /data' \
  --change 'ENV PATH=/usr/local/bin' \
  --change 'ENV ETCDCTL_API=3' \
  --change 'VOLUME /data' \
  --change 'EXPOSE 2379 2380' \
  --change 'CMD ["etcd", "--data-dir=/data"]' \
  - "$image" >/dev/null
echo "built $image: etcd $("$root/usr/local/bin/etcd" --version | awk 'NR==1 {print $3}') ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
