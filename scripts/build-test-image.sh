#!/usr/bin/env bash
# Build a tiny busybox image as an oci-archive for tests and local clusters.
#   scripts/build-test-image.sh [OUTPUT] [REFERENCE]
# OUTPUT defaults to target/test-images/busybox.tar, REFERENCE to navarch.test/busybox:1.35.
# Uses Debian's busybox-static (the installed package's binary, or `apt-get download`
# of the .deb when it is not installed); nothing else is fetched. Idempotent: an
# existing OUTPUT is kept (set FORCE=1 to rebuild). The archive is reproducible
# (fixed mtimes and owners), so rebuilding gives the same digests.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/target/test-images/busybox.tar}"
ref="${2:-navarch.test/busybox:1.35}"

if [ -s "$out" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "build-test-image: $out exists"
    exit 0
fi
for tool in tar gzip sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-test-image: $tool is missing" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/root" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" \
    "$rootfs/var/www" "$rootfs/usr" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

# The busybox binary from Debian's busybox-static.
bb=""
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    for p in $(dpkg -L busybox-static); do
        case "$p" in */bin/busybox) [ -f "$p" ] && bb="$p" && break ;; esac
    done
fi
if [ -z "$bb" ]; then
    deb="$(ls /var/cache/apt/archives/busybox-static_*.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
        (cd "$work" && apt-get download busybox-static >/dev/null) ||
            { echo "build-test-image: cannot get busybox-static (run scripts/setup.sh)" >&2; exit 1; }
        deb="$(ls "$work"/busybox-static_*.deb | head -n1)"
    fi
    dpkg-deb -x "$deb" "$work/deb"
    bb="$work/deb/bin/busybox"
fi
install -m 0755 "$bb" "$rootfs/bin/busybox"

# Applet symlinks (relative, so they work inside the container).
for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
ln -s bin "$rootfs/sbin"
ln -s ../bin "$rootfs/usr/bin"
ln -s ../bin "$rootfs/usr/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
echo 'hello from navarch' >"$rootfs/var/www/index.html"

tar_det() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
tar_det -C "$rootfs" -cf "$work/layer.tar" .
diff_id="$(sha "$work/layer.tar")"
gzip -n -6 -c "$work/layer.tar" >"$work/layer.tar.gz"
layer="$(sha "$work/layer.tar.gz")"
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer"

arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
cat >"$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/build-test-image.sh"}]}
JSON
config="$(sha "$work/config.json")"
cp "$work/config.json" "$layout/blobs/sha256/$config"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$layout/blobs/sha256/$layer")}]}
JSON
manifest="$(sha "$work/manifest.json")"
cp "$work/manifest.json" "$layout/blobs/sha256/$manifest"
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$work/manifest.json"),"annotations":{"org.opencontainers.image.ref.name":"$ref"}}]}
JSON
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar_det -C "$layout" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "build-test-image: wrote $out ($ref, manifest sha256:$manifest)"
