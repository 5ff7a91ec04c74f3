#!/bin/sh
# Installs the Debian packages murmur builds and tests with. Idempotent: it
# asks apt only for what dpkg says is missing, so a second run is a no-op.
# Then the npm packages of tests/node (dynalite for the DynamoDB tests),
# pinned by tests/node/package-lock.json and skipped when already complete.
# cmake, the autotools and python3 are there for npm's aws-lambda-ric, which
# builds its native Runtime API client (curl and aws-lambda-cpp) on install.
#   sh tests/deps.sh          both
#   sh tests/deps.sh debian   the Debian packages only
#   sh tests/deps.sh node     the npm packages only (node and npm must be there)
# .ci/run installs the npm packages while murmur builds: npm ci spends most
# of its minutes building aws-lambda-ric's native client.
set -eu
part=${1:-all}
case $part in
all | debian | node) ;;
*) echo "tests/deps.sh: unknown part '$part' (all, debian or node)" >&2; exit 2 ;;
esac

# tests/node/node_modules holds every package of the lock file: nothing to do.
node_modules_complete() {
	[ -d tests/node/node_modules ] || return 1
	node -e '
		const lock = require("./tests/node/package-lock.json");
		const fs = require("fs");
		// Optional packages for another platform (buf ships one binary per
		// os/cpu) are never installed here; they must not count as missing.
		const fits = (want, have) => !want || want.includes(have);
		for (const [p, v] of Object.entries(lock.packages || {}))
			if (p && !(v.optional && !(fits(v.os, process.platform) && fits(v.cpu, process.arch))) &&
			    !fs.existsSync("tests/node/" + p + "/package.json")) process.exit(1);
	' 2>/dev/null
}

node_deps() {
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		echo "deps: node/npm not found: the DynamoDB tests will be skipped"
		return 0
	fi
	if node_modules_complete; then
		echo "deps: tests/node packages present"
		return 0
	fi
	echo "deps: installing tests/node packages (npm ci)"
	(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
}
PKGS="build-essential pkg-config luajit libluajit-5.1-dev libuv1-dev liblmdb-dev
librdkafka-dev libhiredis-dev libssl-dev openssl lua-busted luarocks clang
libclang-rt-14-dev kcat redis-server zsh groff-base man-db
libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev libhttp-parser-dev chromium
prometheus wrk valgrind zip unzip
cmake autoconf automake libtool python3"
if [ "$part" = node ]; then
	node_deps
	exit 0
fi
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: all Debian packages present"
	[ "$part" = debian ] || node_deps
	exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
[ "$part" = debian ] || node_deps
