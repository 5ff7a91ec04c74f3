#!/bin/sh
# Builds the AWS Lambda deployment zip (`make lambda`; doc/kinesis.md):
#
#   bootstrap            the custom runtime's entry point: puts lib/ on the
#                        library path and execs `bin/murmur lambda`
#   bin/murmur           the binary (debug sections stripped)
#   lib/*.so*            every shared library the binary needs except the
#                        glibc family and libgcc_s, which the Lambda image
#                        provides
#   lua/murmur/*.lua     the Lua modules, found from bin/murmur as ../lua
#                        (engine/main.c), so no MURMUR_LUA_DIR is needed
#   pipelines/*.lua      the shipped pipelines, the handlers
#
# The libraries are those ldd resolves on the build machine: the transitive
# closure, copied under their soname. librdkafka is not linked (murmur loads
# it when a pipeline first needs Kafka, engine/source/kafka_lib.h), so ldd of
# the binary does not list it; it is bundled by name with its own closure
# (lz4, zstd, sasl2...): a Kinesis pipeline may still send its dead letters
# to a Kafka topic. Bundled (about 3 MB with its closure, before
# compression), it costs a start nothing, since the runtime maps it only
# then. The glibc family is left out because glibc's pieces must come from
# one build (the loader, libc and libm check each other's private symbols);
# what the zip asks of the image's glibc is the highest GLIBC_x.y version the
# binary and the bundled libraries reference, printed last ("needs glibc
# X.Y") and checked against doc/kinesis.md by tests/spec/lambda_zip_spec.lua.
#
#   sh tools/lambda_zip.sh BINARY OUT.zip
# Run from the checkout's root. Needs ldd, objdump, strip and zip.
set -eu
bin=${1:?usage: lambda_zip.sh BINARY OUT.zip}
out=${2:?usage: lambda_zip.sh BINARY OUT.zip}
case $out in /*) ;; *) out="$(pwd)/$out" ;; esac
stage="$out.d"

# The libraries the image provides: glibc's (and the vDSO, which is no file),
# and GCC's libgcc_s.so.1, which LuaJIT links for unwinding (it asks only for
# GCC_3.0 and GCC_3.3, which every libgcc_s has). Debian 12's libgcc_s would
# raise the zip's need to glibc 2.35 (_dl_find_object) for no gain, and the
# Amazon Linux 2023 image carries its own (libgcc, GCC 11).
from_image() {
	case $1 in
	linux-vdso.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | libmvec.so.* | \
		libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | libutil.so.* | \
		libanl.so.* | libnsl.so.* | libBrokenLocale.so.* | libthread_db.so.* | \
		libnss_*.so.* | libc_malloc_debug.so.* | libmemusage.so | libpcprofile.so | \
		libgcc_s.so.1)
		return 0 ;;
	esac
	return 1
}

rm -rf "$stage" "$out"
mkdir -p "$stage/bin" "$stage/lib" "$stage/lua/murmur" "$stage/pipelines"
strip --strip-debug -o "$stage/bin/murmur" "$bin"

# "libfoo.so.1 => /path/libfoo.so.1 (0x...)": copy the file behind the path
# (cp -L follows the distribution's symlinks) under the name the binary asks for.
ldd "$bin" >"$stage/ldd.txt"
rdk=$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p |
	awk '$1 == "librdkafka.so.1" && $NF ~ /^\// { print $NF; exit }')
if [ -z "$rdk" ]; then
	echo "lambda_zip: librdkafka.so.1 is not installed (apt-get install librdkafka1)" >&2
	exit 1
fi
echo "	librdkafka.so.1 => $rdk (0)" >>"$stage/ldd.txt"
ldd "$rdk" >>"$stage/ldd.txt"
if grep -q 'not found' "$stage/ldd.txt"; then
	echo "lambda_zip: the binary has unresolved libraries:" >&2
	grep 'not found' "$stage/ldd.txt" >&2
	exit 1
fi
awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' "$stage/ldd.txt" | sort -u |
	while read -r name path; do
		from_image "$name" && continue
		cp -L "$path" "$stage/lib/$name"
		strip --strip-debug "$stage/lib/$name"
	done
rm "$stage/ldd.txt"

# The Lua modules without the source checkout's pipelines symlink (the
# pipelines have their own directory, which the handler names).
for f in lua/murmur/*.lua; do
	cp "$f" "$stage/lua/murmur/"
done
cp pipelines/*.lua "$stage/pipelines/"

cat >"$stage/bootstrap" <<'EOF'
#!/bin/sh
# murmur's AWS Lambda custom runtime (provided.al2023). Lambda runs this file
# from the unpacked zip (LAMBDA_TASK_ROOT, /var/task) with _HANDLER set to the
# function's handler, the pipeline script, e.g. pipelines/recently_interacted.lua,
# which `murmur lambda` reads relative to this directory.
set -eu
root=${LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}
cd "$root"
# The libraries murmur was built with, ahead of the image's.
export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The bundled OpenSSL looks for CA certificates where the build machine keeps
# them; it reads SSL_CERT_FILE instead when it is set, so point it at Amazon
# Linux's bundle.
if [ -z "${SSL_CERT_FILE:-}" ] && [ -r /etc/pki/tls/certs/ca-bundle.crt ]; then
	export SSL_CERT_FILE=/etc/pki/tls/certs/ca-bundle.crt
fi
# /tmp is the only writable directory of a Lambda sandbox.
export MURMUR_DATA="${MURMUR_DATA:-/tmp/murmur-data}"
exec "$root/bin/murmur" lambda
EOF
chmod 755 "$stage/bootstrap" "$stage/bin/murmur"
chmod 644 "$stage/lib/"* "$stage/lua/murmur/"* "$stage/pipelines/"*

# The highest GLIBC_x.y that the binary and the bundled libraries require
# (their version references, which the dynamic loader checks at start).
need=$(for f in "$stage/bin/murmur" "$stage/lib/"*; do
	objdump -p "$f" | sed -n '/^Version References:/,$p'
done | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n | tail -1)

# Fixed times and sorted names, so the same inputs give the same zip.
find "$stage" -exec touch -h -d 2000-01-01T00:00:00Z {} +
(cd "$stage" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | zip -q -X -@ "$out.tmp")
mv "$out.tmp" "$out"
rm -rf "$stage"
echo "lambda_zip: $out: $(du -k "$out" | cut -f1) KiB; needs glibc $need"
