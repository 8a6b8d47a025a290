#!/usr/bin/env bash
# Build the local test image `dockmesh-test/busybox:1` from Debian's busybox-static package.
# There is no registry here: nothing can be pulled, so the image is made from a rootfs tarball
# and `docker import`. Idempotent: does nothing when the image already exists.
set -euo pipefail
IMAGE="${DOCKMESH_TEST_IMAGE:-dockmesh-test/busybox:1}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "test image $IMAGE present"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download busybox-static >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get download busybox-static >/dev/null
fi
dpkg-deb -x busybox-static_*.deb pkg
mkdir -p rootfs/bin rootfs/tmp rootfs/etc rootfs/var/www rootfs/data rootfs/proc rootfs/sys rootfs/dev
cp pkg/bin/busybox rootfs/bin/busybox
for app in $(rootfs/bin/busybox --list); do
  [ "$app" = busybox ] || ln -sf busybox "rootfs/bin/$app"
done
ln -s bin rootfs/sbin
mkdir -p rootfs/usr
ln -s ../bin rootfs/usr/bin
chmod 1777 rootfs/tmp
echo 'root:x:0:0:root:/root:/bin/sh' > rootfs/etc/passwd
echo 'root:x:0:' > rootfs/etc/group
echo 'dockmesh test page' > rootfs/var/www/index.html
tar -C rootfs -cf rootfs.tar .
docker import \
  --change 'ENV PATH=/bin' \
  --change 'CMD ["/bin/sh"]' \
  rootfs.tar "$IMAGE" >/dev/null
echo "built test image $IMAGE"
