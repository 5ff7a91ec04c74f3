#!/bin/sh
# make fuzz: build every libFuzzer target and run each for a bounded time.
#
#   BUILD=build/fuzz FUZZ_SECONDS=20 FUZZ_JOBS=2 sh tests/fuzz/run.sh tests/fuzz/fuzz_*.c
#
# The targets link the engine's pure layers (engine/lib, engine/monoid,
# engine/codec, engine/aws without credentials.c, which fetches on the loop:
# no libuv, no Lua, no LMDB), compiled here with clang and
# coverage instrumentation into $BUILD. A target that needs more names it in
# one line of its own source, "fuzz-link: FILE.c... -lLIB...": those engine
# files are compiled into it (instrumented, with the libraries' include
# flags) and the libraries linked, e.g. engine/lua/json_lua.c -lluajit-5.1.
# Each target starts from a scratch
# copy of its seed corpus tests/fuzz/corpus/<name>/ because libFuzzer adds
# the inputs it finds to the first corpus directory it is given, and the
# committed corpus must stay as reviewed. Crash, leak and timeout
# reproducers go to $BUILD/artifacts/; any of them fails the run.
#
# Targets run FUZZ_JOBS at a time (default 2, one per core of the CI
# machine), each for its full FUZZ_SECONDS on a core of its own: libFuzzer
# runs one process per target, so two targets side by side do the fuzzing of
# two runs in the wall time of one. Each batch's lines are printed when all
# of it has ended, in the order the targets were given.
#
# One summary line per target: executions, execs/s, coverage (edges and
# features), corpus size, peak RSS. Exit status 1 if any target failed.
set -eu

BUILD=${BUILD:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_JOBS=${FUZZ_JOBS:-2}
CLANG=${CLANG:-clang}
[ $# -gt 0 ] || set -- tests/fuzz/fuzz_*.c

if ! command -v "$CLANG" >/dev/null 2>&1; then
	echo "fuzz: $CLANG not found (Debian: apt-get install clang)" >&2
	exit 1
fi

# Sanitizer failures must stop the target: UBSan reports are fatal so
# libFuzzer records them as crashes instead of printing and going on.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -fno-strict-aliasing -DMM_FUZZ -Iengine $SAN"

# Include flags of the libraries a fuzz-link line may name.
PKG_CFLAGS=$(pkg-config --cflags luajit libuv hiredis 2>/dev/null || echo "-I/usr/include/luajit-2.1")

# The query service's protobuf-c code, generated as the Makefile does; a
# fuzz-link word gen/X.c names $BUILD/gen/X.c.
mkdir -p "$BUILD/gen"
protoc-c --c_out="$BUILD/gen" -Iproto proto/murmur/v1/query.proto
PKG_CFLAGS="$PKG_CFLAGS -I$BUILD/gen"

mkdir -p "$BUILD/obj" "$BUILD/artifacts"
lib="$BUILD/libmurmur_pure.a"
objs=
for src in $(find engine/lib engine/monoid engine/codec engine/aws -name '*.c' ! -name credentials.c | sort); do
	obj="$BUILD/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')"
	# fuzzer-no-link: coverage instrumentation without libFuzzer's main.
	# Always rebuilt: a dozen files at -O1 take seconds, and no stale
	# object can hide a fixed or a new bug.
	$CLANG $CFLAGS -fsanitize=fuzzer-no-link -c -o "$obj" "$src"
	objs="$objs $obj"
done
rm -f "$lib"
ar rcs "$lib" $objs

# Builds one target, then fuzzes it for FUZZ_SECONDS; its lines go to
# $BUILD/fuzz_NAME.out (printed by the caller), the sanitizer report to
# $BUILD/fuzz_NAME.err, and "ok" to $BUILD/fuzz_NAME.ok when it passed.
fuzz_target() {
	src=$1
	name=$(basename "$src" .c)
	name=${name#fuzz_}
	bin="$BUILD/fuzz_$name"
	log="$BUILD/fuzz_$name.log"
	work="$BUILD/corpus/$name"
	out="$BUILD/fuzz_$name.out"

	extra=$(sed -n 's/.*fuzz-link: *//p' "$src" | head -n 1)
	# shellcheck disable=SC2086 # extra is a list of words
	$CLANG $CFLAGS $PKG_CFLAGS -fsanitize=fuzzer -o "$bin" "$src" $(for w in $extra; do
		case $w in gen/*.c) echo "$BUILD/$w" ;; *.c) echo "$w" ;; esac; done) "$lib" $(for w in $extra; do
		case $w in -l*) echo "$w" ;; esac; done) -lm

	rm -rf "$work"
	mkdir -p "$work"
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp tests/fuzz/corpus/"$name"/* "$work"/
	else
		echo "fuzz: warning: no seed corpus tests/fuzz/corpus/$name" >&2
	fi
	seeds=$(ls "$work" | wc -l)

	echo "# fuzz_$name: ${FUZZ_SECONDS}s from $seeds seeds" >"$out"
	rc=0
	"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$name-" \
		"$work" >"$log" 2>&1 || rc=$?

	# The last status line ("#N DONE cov: E ft: F corp: C/S ...") gives
	# coverage; the final stats give executions, speed and memory.
	status=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	cov=$(echo "$status" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$status" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$status" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
	if [ "$rc" -eq 0 ]; then
		verdict=ok
		echo ok >"$BUILD/fuzz_$name.ok"
	else
		verdict="FAILED (exit $rc, log $log)"
		# Show the report: the sanitizer or abort message and the stack.
		grep -E -A 30 '^==[0-9]+==|runtime error|deadly signal|ERROR: libFuzzer' "$log" | head -n 60 \
			>"$BUILD/fuzz_$name.err" || true
	fi
	printf 'fuzz_%-10s %s  execs=%s (%s/s) cov=%s ft=%s corpus=%s seeds=%s rss=%sMB\n' \
		"$name" "$verdict" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$seeds" "${rss:-?}" >>"$out"
}

# Prints the targets of a batch in order once all have ended; a target that
# ended without its "ok" (a build error, a crash, a leak) fails the run.
failed=0
summary=
batch=
finish_batch() {
	wait
	for name in $batch; do
		cat "$BUILD/fuzz_$name.out" 2>/dev/null || echo "# fuzz_$name: did not run (see the errors above)"
		if [ -s "$BUILD/fuzz_$name.err" ]; then cat "$BUILD/fuzz_$name.err" >&2; fi
		if [ -e "$BUILD/fuzz_$name.ok" ]; then
			line=$(tail -n 1 "$BUILD/fuzz_$name.out")
		else
			failed=1
			line=$(tail -n 1 "$BUILD/fuzz_$name.out" 2>/dev/null | grep FAILED ||
				printf 'fuzz_%-10s FAILED (no result: build error?)' "$name")
		fi
		summary="$summary$line
"
	done
	batch=
}

n=0
for src in "$@"; do
	name=$(basename "$src" .c)
	name=${name#fuzz_}
	rm -f "$BUILD/fuzz_$name.out" "$BUILD/fuzz_$name.err" "$BUILD/fuzz_$name.ok"
	fuzz_target "$src" &
	batch="$batch $name"
	n=$((n + 1))
	if [ $((n % FUZZ_JOBS)) -eq 0 ]; then finish_batch; fi
done
finish_batch

echo "# fuzz summary (${FUZZ_SECONDS}s per target):"
printf '%s' "$summary"
exit "$failed"
