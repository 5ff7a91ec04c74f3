#!/bin/sh
# make bench: throughput of the shipped pipelines on generated Zipf events.
# Prints events/s, ns/event, store writes per event and peak RSS per case.
set -eu
BUILD=${BUILD:-build}
EVENTS=${BENCH_EVENTS:-2000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 noid >"$dir/events.jsonl"
"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 >"$dir/events-with-ids.jsonl"
echo "bench: $EVENTS Zipf(1.1) events over 100000 entities, $(wc -c <"$dir/events.jsonl") bytes ($(wc -c <"$dir/events-with-ids.jsonl") with event ids), $(nproc) cores"
echo "each case: murmur run --once from a file into a fresh LMDB store (fsync'd commits); events/s is wall clock"
MURMUR="$BUILD/murmur" "$BUILD"/murmur lua tests/bench/bench.lua "$dir" "$EVENTS"
