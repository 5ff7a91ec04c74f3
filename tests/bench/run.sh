#!/bin/sh
# make bench: throughput of the shipped pipelines on generated Zipf events.
# Prints events/s, ns/event, store writes per event and peak RSS per case.
set -eu
BUILD=${BUILD:-build}
EVENTS=${BENCH_EVENTS:-2000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 >"$dir/events.jsonl"
echo "bench: $EVENTS Zipf(1.1) events over 100000 entities, $(wc -c <"$dir/events.jsonl") bytes, $(nproc) cores"
MURMUR="$BUILD/murmur" exec "$BUILD"/murmur lua tests/bench/bench.lua "$dir"
