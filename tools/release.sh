#!/bin/sh
# tools/release.sh DIR: the release binary DIR/murmur, built with GCC's
# profile-guided optimisation (make release, the LuaRocks build, make bench).
#
#   1. an instrumented build in DIR (PGO=gen: every branch and call counted);
#   2. a training run: the shipped pipelines over generated events, each
#      object's counts written beside it (DIR/.../x.gcda);
#   3. the build again in DIR (PGO=use): GCC lays out, inlines and unrolls
#      the code by those counts. Code the training never ran (the Kafka,
#      Kinesis and DynamoDB paths, the query server) is compiled as -O2
#      compiles it (-fprofile-partial-training), not for size.
#
# Both builds leave out the error-injection points (ERRINJ=0), as a LuaRocks
# install does. The events are made by the gen_events helper, of the bench's
# shape (Zipf 1.1 over 100 000 entities) with a seed and a size of their own;
# two runs of recently_interacted with event ids share a store so that the
# second one replays ids already seen, and page_views runs once more with a
# Lua key function, so that each path the shipped pipelines take is counted.
#
# RELEASE_PGO=0 skips steps 1 and 2: a plain -O2 build, the same binary from
# the same sources, where a profile also depends on the training's timing.
# A training that fails says why and falls back to the same plain build: a
# release build never fails for want of a profile. RELEASE_PGO_EVENTS sets
# the training's size (default 300000 events a run).
#
# MAKE is the make to run (the Makefile passes its own, with its flags).
set -eu
dir=${1:?usage: tools/release.sh DIR}
# make -n runs a recipe line that names $(MAKE), as the Makefile's lines that
# call this script do. Its single-letter flags are MAKEFLAGS' first word
# (empty when it has none); under -n they hold n, and a dry run does
# nothing but say so.
flags=${MAKEFLAGS:-}
case ${flags%% *} in
-*) ;;
*n*)
	echo "release: would build $dir/murmur (tools/release.sh)"
	exit 0
	;;
esac
make=${MAKE:-make}
events=${RELEASE_PGO_EVENTS:-300000}
root=$(pwd)
case $events in
'' | *[!0-9]* | 0)
	echo "release: RELEASE_PGO_EVENTS=$events is not a number of events (default 300000)" >&2
	exit 2
	;;
esac

clean_objects() {
	[ -d "$dir" ] || return 0
	find "$dir" \( -name '*.o' -o -name '*.a' \) -exec rm -f {} +
	rm -f "$dir/murmur"
}

# Removes the counts of an earlier or a failed training, which a build with
# PGO=use would otherwise read.
clean_profile() {
	[ -d "$dir" ] || return 0
	find "$dir" -name '*.gcda' -exec rm -f {} +
}

# The training run, in a directory of its own that it removes. Each step
# checks its status: set -e does not act in a function called as an if's
# condition.
train() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/murmur-pgo.XXXXXX") || return 1
	train_in "$work"
	status=$?
	rm -rf "$work"
	return $status
}

train_in() {
	w=$1
	gen="$dir/helpers/gen_events"
	"$gen" "$events" 100000 1.1 7 noid >"$w/noid.jsonl" || return 1
	"$gen" "$events" 100000 1.1 7 >"$w/ids.jsonl" || return 1
	sed 's/key = "page_id"/key = function(ev) return ev.page_id end/' \
		pipelines/page_views.lua >"$w/page_views_lua_key.lua" || return 1
	grep -q 'key = function' "$w/page_views_lua_key.lua" || {
		echo "release: pipelines/page_views.lua no longer has key = \"page_id\"" >&2
		return 1
	}
	for p in recently_interacted page_views unique_visitors; do
		train_run "$w/$p" "$w/noid.jsonl" "pipelines/$p.lua" || return 1
	done
	# The second run replays every id the first one marked.
	train_run "$w/ids" "$w/ids.jsonl" pipelines/recently_interacted.lua || return 1
	train_run "$w/ids" "$w/ids.jsonl" pipelines/recently_interacted.lua || return 1
	train_run "$w/lua_key" "$w/noid.jsonl" "$w/page_views_lua_key.lua"
}

train_run() { # DATA INPUT SCRIPT
	MURMUR_LUA_DIR="$root/lua" "$dir/murmur" run --once --log-level warn \
		--data "$1" --input "$2" "$3" >/dev/null
}

if [ "${RELEASE_PGO:-1}" = 0 ]; then
	echo "release: RELEASE_PGO=0: a plain -O2 build in $dir, without a profile"
	clean_objects
	clean_profile
	$make --no-print-directory BUILD="$dir" ERRINJ=0 PGO= "$dir/murmur"
	exit 0
fi

echo "release: 1 of 3: an instrumented build in $dir"
clean_objects
clean_profile
$make --no-print-directory BUILD="$dir" ERRINJ=0 PGO=gen "$dir/murmur" "$dir/helpers/gen_events"
echo "release: 2 of 3: training it: the shipped pipelines over $events generated events a run"
if train; then
	pgo=use
	echo "release: 3 of 3: the build again, optimised by the training's profile"
else
	pgo=
	clean_profile
	echo "release: the training run failed (above); building $dir/murmur without a profile" \
		"(plain -O2). RELEASE_PGO=0 skips the training." >&2
fi
clean_objects
$make --no-print-directory BUILD="$dir" ERRINJ=0 PGO=$pgo "$dir/murmur"
echo "release: $dir/murmur"
