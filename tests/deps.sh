#!/bin/sh
# Installs the Debian packages murmur builds and tests with. Idempotent: it
# asks apt only for what dpkg says is missing, so a second run is a no-op.
set -eu
PKGS="build-essential pkg-config luajit libluajit-5.1-dev libuv1-dev liblmdb-dev
librdkafka-dev libhiredis-dev libcurl4-openssl-dev lua-busted luarocks clang
libclang-rt-14-dev kcat redis-server"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: all Debian packages present"
	exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
