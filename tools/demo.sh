#!/bin/sh
# make demo: generate sample interactions, run the flagship pipeline on the
# embedded store, and query the result, as a first-time user would.
set -eu
BUILD=${BUILD:-build}
DEMO=${DEMO_DIR:-$BUILD/demo}
EVENTS=${DEMO_EVENTS:-200000}
rm -rf "$DEMO"
mkdir -p "$DEMO"
echo "==> generating $EVENTS Zipf-distributed interaction events in $DEMO/events.jsonl"
"$BUILD"/helpers/gen_events "$EVENTS" 100000 1.1 42 >"$DEMO/events.jsonl"
head -n 2 "$DEMO/events.jsonl"
echo "==> $BUILD/murmur run --once --data $DEMO/data --input $DEMO/events.jsonl pipelines/recently_interacted.lua"
"$BUILD"/murmur run --once --data "$DEMO/data" --input "$DEMO/events.jsonl" pipelines/recently_interacted.lua
echo "==> $BUILD/murmur query pipelines/recently_interacted.lua global --data $DEMO/data --top 10"
"$BUILD"/murmur query pipelines/recently_interacted.lua global --data "$DEMO/data" --top 10
