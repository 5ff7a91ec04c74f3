#!/bin/sh
# make bench: CPU per event of the shipped pipelines on generated Zipf events,
# as ratios against the B0 baseline (tests/bench/baseline.c) measured in the
# same interleaved run, then the dedup marks over long runs and the Valkey,
# Kafka, Kinesis, Lambda and DynamoDB figures.
# BENCH_EVENTS (default 2 000 000) and BENCH_REPS (default 3) size it;
# BENCH_CPU_ONLY=1 runs only the CPU-per-event table against B0; BENCH_CASES=ri,ri_ids
# only those cases of it (tests/bench/bench.lua lists the ids).
# MURMUR is the binary measured (make bench: build/release/murmur, the
# profile-guided release build); BUILD holds the helpers and B0.
# doc/performance.md explains the method and lists the figures.
set -eu
BUILD=${BUILD:-build}
MURMUR=${MURMUR:-$BUILD/murmur}
EVENTS=${BENCH_EVENTS:-2000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The measurements, printed as they run.
measure() {
	"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 noid >"$dir/events.jsonl"
	"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 >"$dir/events-with-ids.jsonl"
	echo "bench: $EVENTS Zipf(1.1) events over 100000 entities, $(wc -c <"$dir/events.jsonl") bytes ($(wc -c <"$dir/events-with-ids.jsonl") with event ids), $(nproc) cores"
	echo "murmur: $MURMUR; B0: $BUILD/bench/baseline"
	echo "each case: murmur run --once from a file into a fresh LMDB store (fsync'd commits), interleaved with B0 on the same file"
	MURMUR="$MURMUR" BUILD="$BUILD" "$BUILD"/murmur lua tests/bench/bench.lua "$dir" "$EVENTS"
	[ "${BENCH_CPU_ONLY:-0}" = 1 ] || [ -n "${BENCH_CASES:-}" ] && return 0
	echo "marks: the embedded store's dedup marks alone over long runs, a flush a second (tests/bench/marks.c)"
	"$BUILD"/bench/marks 1000 10000 0
	"$BUILD"/bench/marks 1000 10000 300
	"$BUILD"/bench/marks 10000 1000 3000
	if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
		echo "valkey: a private redis-server on 127.0.0.1; read latency per call as murmur query issues it, warm"
		MURMUR="$MURMUR" "$BUILD"/murmur lua tests/bench/valkey.lua "$dir" "$dir/events.jsonl"
	fi
	if command -v kcat >/dev/null 2>&1; then
		echo "kafka: librdkafka's mock cluster (1 broker, its own process) fed by kcat (zstd, keyed); one worker, recently_interacted, LMDB"
		MURMUR="$MURMUR" BUILD="$BUILD" "$BUILD"/murmur lua tests/bench/kafka.lua "$dir" "$dir/events.jsonl"
	fi
	if command -v node >/dev/null 2>&1 && [ -f tests/node/node_modules/kinesalite/package.json ]; then
		MURMUR="$MURMUR" "$BUILD"/murmur lua tests/bench/kinesis.lua "$dir" "$dir/events-with-ids.jsonl"
	else
		echo "kinesis: skipped (node or tests/node/node_modules missing: make deps)"
	fi
	if command -v node >/dev/null 2>&1 && [ -f tests/node/node_modules/kinesalite/package.json ] &&
		[ -f tests/node/node_modules/dynalite/package.json ]; then
		MURMUR="$MURMUR" "$BUILD"/murmur lua tests/bench/lambda.lua "$dir" "$dir/events-with-ids.jsonl"
	else
		echo "lambda: skipped (node or tests/node/node_modules missing: make deps)"
	fi
	if command -v node >/dev/null 2>&1 && [ -f tests/node/node_modules/dynalite/package.json ]; then
		MURMUR="$MURMUR" BUILD="$BUILD" "$BUILD"/murmur lua tests/bench/dynamodb.lua "$dir" "$EVENTS"
		node tests/bench/dynamodb_claim_floor.js
	else
		echo "dynamodb: skipped (node or tests/node/node_modules missing: make deps)"
	fi
	if command -v wrk >/dev/null 2>&1; then
		echo "serve: murmur serve on a fresh LMDB store, wrk at 64 connections (tests/bench/serve.lua)"
		MURMUR="$MURMUR" "$BUILD"/murmur lua tests/bench/serve.lua "$dir"
	else
		echo "serve: skipped (wrk missing: make deps)"
	fi
}

# Every verdict again at the end, where a reader of a long run looks: the
# output goes through tee, and a run that stops on an error leaves no "ok".
{
	measure
	: >"$dir/ok"
} 2>&1 | tee "$dir/out"
[ -f "$dir/ok" ] || exit 1
echo "bench: the targets of this run"
grep -E '^(PASS|MISS)  ' "$dir/out" || echo "bench: no target was measured"
# The absolute targets (unique_visitors' ns, DynamoDB's us) move with the
# shared host's speed, which these lines of the run show: B0's own CPU per
# event, unique_visitors against its B0 and the floor of a DynamoDB client
# that signs nothing.
speed=$(sed -nE \
	-e 's/^recently_interacted, no event ids +[0-9.]+ ns +([0-9.]+) ns.*/B0, recently_interacted without ids: \1 ns an event/p' \
	-e 's/^ +unique_visitors against B0 \(hll\) +(.*)/unique_visitors against its B0 (hll): \1/p' \
	-e 's/^floor \(tests\/bench\/dynamodb_floor\) +(.*)/DynamoDB floor (a client that signs nothing): \1/p' "$dir/out")
if [ -n "$speed" ]; then
	echo "bench: the host's speed in this run (doc/performance.md, \"Where issue 14's targets stand\")"
	echo "$speed"
fi
