#!/bin/sh
# tests/bench/baseline_build.sh BUILD: the B0 baseline, BUILD/bench/baseline,
# built as tools/release.sh builds murmur's release binary: instrumented,
# trained on generated events (the same seed, skew and size as murmur's
# training) in each of its four modes, then compiled again with that
# profile. make bench compares the release binary with it, so both sides of
# every ratio are profile-guided. CC is the compiler with its flags.
set -eu
build=${1:?usage: tests/bench/baseline_build.sh BUILD}
out=$build/bench/baseline
cc=${CC:-cc}
events=${RELEASE_PGO_EVENTS:-300000}
work=$(mktemp -d "${TMPDIR:-/tmp}/murmur-b0-pgo.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/bench"
echo "bench: B0, built with a profile of its own training run (tests/bench/baseline_build.sh)"
# GCC names the profile after the output (BUILD/bench/baseline.gcda): both
# compiles write the same file, and an old profile goes first.
rm -f "$out.gcda"
$cc -fprofile-generate -fprofile-update=atomic -o "$out" tests/bench/baseline.c -llmdb -lm
"$build/helpers/gen_events" "$events" 100000 1.1 7 noid >"$work/noid.jsonl"
"$build/helpers/gen_events" "$events" 100000 1.1 7 >"$work/ids.jsonl"
"$out" mg entity_id "$work/noid.jsonl" "$work/mg" 100000 >/dev/null
"$out" exact page_id "$work/noid.jsonl" "$work/exact" 100000 >/dev/null
"$out" dedup entity_id "$work/ids.jsonl" "$work/dedup" 100000 >/dev/null
"$out" hll page_id:user_id "$work/noid.jsonl" "$work/hll" 100000 >/dev/null
$cc -fprofile-use -fprofile-partial-training -o "$out" tests/bench/baseline.c -llmdb -lm
