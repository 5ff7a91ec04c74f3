# murmur: build, test and install.
#
#   make            build build/murmur (warnings are errors)
#   make deps       install the Debian packages murmur needs (idempotent)
#   make demo       deps + build + run recently_interacted on sample events + query
#   make test       C unit tests, busted specs, end-to-end specs; last line "N passed, N failed"
#                   (TEST_JOBS=2: spec files two at a time, each printed whole)
#   make check      the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-build  only build what make check runs (build/asan, build/portable)
#   make fuzz       build the libFuzzer targets and run each for FUZZ_SECONDS,
#                   FUZZ_JOBS (2) at a time
#   make release    build/release/murmur, profile-guided (tools/release.sh: an instrumented
#                   build, a training run on the shipped pipelines, the optimised build)
#   make bench      CPU per event of the shipped pipelines as ratios against the B0
#                   baseline, plus rates, RSS, recovery and store figures (minutes)
#   make perfgate   instructions per event (callgrind) against tests/bench/perf_budget.txt;
#                   fails above budget + 10% (PERF_RECORD=1 re-records the budget)
#   make lambda     build/murmur-lambda.zip, the AWS Lambda deployment (provided.al2023):
#                   bootstrap, a release binary, the libraries the image lacks, Lua
#                   modules, pipelines; prints the glibc it needs (doc/kinesis.md)
#   make install    PREFIX=/usr/local: binary, Lua modules, shipped pipelines, man page,
#                   bash/zsh completions (LuaRocks uses its own tree instead)

CC        ?= cc
BUILD     ?= build
SANITIZE  ?=
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LUADIR    ?= $(PREFIX)/share/lua/5.1
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FUZZ_SECONDS ?= 20
# Spec files run at a time (tests/run, MURMUR_TEST_JOBS; README "Tests"
# says why one) and fuzz targets fuzzed at a time (tests/fuzz/run.sh: one
# per core of a 2-core machine).
TEST_JOBS ?= 1
FUZZ_JOBS ?= 2

PKGS      := luajit libuv lmdb hiredis libssl libcrypto libprotobuf-c libnghttp2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) rdkafka 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifeq ($(PKG_LIBS),)
PKG_CFLAGS := -I/usr/include/luajit-2.1
PKG_LIBS   := -lluajit-5.1 -luv -llmdb -lhiredis -lssl -lcrypto -lprotobuf-c -lnghttp2
endif
# librdkafka: murmur compiles against its headers but does not link it; it
# loads the library when something first needs Kafka (engine/source/kafka_lib.h
# says why: a start without it is about 70 page faults shorter). The unit tests
# and helpers that drive librdkafka themselves (its mock cluster, a consumer
# that reads back what murmur produced) link it.
RDK_LIBS   := $(shell pkg-config --libs rdkafka 2>/dev/null)
ifeq ($(RDK_LIBS),)
RDK_LIBS   := -lrdkafka
endif
# libhttp-parser ships no pkg-config file.
PKG_LIBS  += -lhttp_parser
# Named first on murmur's link line, for start-up time only. Most of what the
# dynamic linker does at each start is looking up the symbols libcrypto binds
# to itself, each search walking the library list in load order, where it
# would come after some fifteen others. Named first, it is found at once:
# with libcurl's GnuTLS and Nettle, then also named here, this saved 22% of
# a whole process start (callgrind of `murmur version`); murmur no longer
# links libcurl, so they are gone. No binding changes: none of its symbols is
# defined by another library the binary loads (nm -D). Added only when its
# development files are installed.
START_LIBS := $(foreach p,libcrypto,$(shell pkg-config --libs $(p) 2>/dev/null))
ifneq ($(strip $(START_LIBS)),)
START_LIBS := -Wl,--push-state,--no-as-needed $(START_LIBS) -Wl,--pop-state
endif

OPT       ?= -O2
# Error-injection points (tarantool errinj style) are compiled into every
# build the tests use; the LuaRocks build turns them off (ERRINJ=0).
ERRINJ    ?= 1
# Release builds (make release, rock, lambda: tools/release.sh) are
# profile-guided; RELEASE_PGO=0 builds them plain.
RELEASE_PGO ?= 1
WARN      := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
MM_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -fno-strict-aliasing -I$(BUILD)/gen $(PKG_CFLAGS) $(CFLAGS)
MM_LDFLAGS := $(LDFLAGS)
ifeq ($(ERRINJ),1)
MM_CFLAGS  += -DMM_ERRINJ
endif
# The two builds of a profile-guided one (tools/release.sh): gen counts
# every branch (atomically: the thread pool's flushes run beside the loop),
# use compiles with the counts the training wrote beside each object.
ifeq ($(PGO),gen)
MM_CFLAGS  += -fprofile-generate -fprofile-update=atomic
MM_LDFLAGS += -fprofile-generate
else ifeq ($(PGO),use)
MM_CFLAGS  += -fprofile-use -fprofile-partial-training
endif
ifneq ($(SANITIZE),)
MM_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
MM_LDFLAGS += -fsanitize=$(SANITIZE)
endif
LIBS      := $(PKG_LIBS) -lpthread -lm -ldl

ENGINE_SRC := $(sort $(shell find engine -name '*.c' ! -name main.c))
PURE_SRC   := $(filter engine/lib/% engine/monoid/% engine/codec/%,$(ENGINE_SRC))
# The Valkey store's server-side scripts, embedded as C arrays at build time.
VALKEY_LUA := $(sort $(wildcard engine/store/valkey_lua/*.lua))
# The admin page (engine/net/admin/index.html), embedded the same way.
ADMIN_PAGE := engine/net/admin/index.html
# The query service's messages: C generated by protoc-c from the .proto at
# build time (build/gen, never committed), compiled into the engine.
PROTO      := proto/murmur/v1/query.proto
PROTO_GEN  := $(BUILD)/gen/murmur/v1/query.pb-c.c
# murmur's own Lua modules, compiled to LuaJIT bytecode by the build tool
# tools/lua_bytecode.c and embedded (engine/lua/modules.h: the bytecode runs
# only while the module's source file is the one it was compiled from). In
# the binary only, not in libmurmur.a, so that editing a module relinks
# murmur and none of the unit tests.
LUA_MODS   := $(sort $(wildcard lua/murmur/*.lua))
GEN_OBJ    := $(BUILD)/gen/valkey_lua.o $(BUILD)/gen/admin_page.o $(PROTO_GEN:.c=.o)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o) $(GEN_OBJ)
PURE_OBJ   := $(PURE_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRC := $(sort $(wildcard tests/helpers/*.c))
HELPER_BIN := $(HELPER_SRC:tests/helpers/%.c=$(BUILD)/helpers/%)
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
# The bench's own programs: the B0 baseline, the CPU-time wrapper and the
# minimal DynamoDB client that measures the floor of a request's CPU
# (standalone: they link no engine code; neither does perfgate's preload),
# and the dedup marks' long run, which does (it measures them).
BENCH_BIN  := $(BUILD)/bench/baseline $(BUILD)/bench/cpu $(BUILD)/bench/dynamodb_floor \
	      $(BUILD)/bench/marks

.PHONY: all demo rock release FORCE deps test check check-build fuzz bench perfgate lambda install clean unit spec format

all: $(BUILD)/murmur $(UNIT_BIN) $(HELPER_BIN)

# LuaRocks builds only the binary (see murmur-dev-1.rockspec), as make
# release does.
rock:
	@RELEASE_PGO="$(RELEASE_PGO)" MAKE="$(MAKE)" sh tools/release.sh $(BUILD)

# The release binary build/release/murmur, remade when a source it is built
# or trained from changes, or RELEASE_PGO does (build/release.mode holds it,
# rewritten only when it changes). The stamp stands for the binary: the
# inner makes build it by the rules above.
RELEASE_DEPS := $(shell find engine lua pipelines proto tools tests/helpers -type f) Makefile
release: build/release.stamp

build/release.mode: FORCE
	@mkdir -p $(dir $@)
	@echo "RELEASE_PGO=$(RELEASE_PGO)" | cmp -s - $@ || echo "RELEASE_PGO=$(RELEASE_PGO)" >$@

build/release.stamp: $(RELEASE_DEPS) build/release.mode
	@RELEASE_PGO="$(RELEASE_PGO)" MAKE="$(MAKE)" sh tools/release.sh build/release
	@touch $@

FORCE:

$(BUILD)/murmur: $(BUILD)/engine/main.o $(BUILD)/gen/lua_modules.o $(BUILD)/libmurmur.a
	$(CC) $(MM_LDFLAGS) -rdynamic -o $@ $< $(BUILD)/gen/lua_modules.o -Wl,--whole-archive $(BUILD)/libmurmur.a -Wl,--no-whole-archive $(START_LIBS) $(LIBS)

$(BUILD)/libmurmur.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c | $(PROTO_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/gen/valkey_lua.c: $(VALKEY_LUA) tools/embed.sh
	@mkdir -p $(dir $@)
	EMBED_PREFIX=mm_valkey_lua EMBED_HEADER=store/valkey_impl.h sh tools/embed.sh $(VALKEY_LUA) >$@.tmp
	mv $@.tmp $@

$(BUILD)/gen/admin_page.c: $(ADMIN_PAGE) tools/embed.sh
	@mkdir -p $(dir $@)
	EMBED_PREFIX=mm_admin_page EMBED_HEADER=net/admin.h sh tools/embed.sh $(ADMIN_PAGE) >$@.tmp
	mv $@.tmp $@

$(BUILD)/gen/lua_modules.c: $(LUA_MODS) $(BUILD)/tools/lua_bytecode
	@mkdir -p $(dir $@)
	$(BUILD)/tools/lua_bytecode $(LUA_MODS) >$@.tmp
	mv $@.tmp $@

# A build tool, run on the build machine: it links the same LuaJIT as the
# binary, so the bytecode it writes is the one that LuaJIT loads.
$(BUILD)/tools/lua_bytecode: tools/lua_bytecode.c engine/lib/hash.c engine/lib/hash.h engine/lua/modules.h
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ tools/lua_bytecode.c engine/lib/hash.c $(PKG_LIBS) -lm

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(MM_CFLAGS) -Iengine -MMD -MP -c -o $@ $<

# Kept: make would delete the generated .c as an intermediate file after the
# first build, and the next make would generate it again and relink every
# binary (CI's make test, then make check after check-build).
.SECONDARY: $(PROTO_GEN)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmurmur.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ $< $(BUILD)/libmurmur.a $(LIBS) $(RDK_LIBS)

$(BUILD)/helpers/%: tests/helpers/%.c $(BUILD)/libmurmur.a
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ $< $(BUILD)/libmurmur.a $(LIBS) $(RDK_LIBS)

-include $(ENGINE_OBJ:.o=.d) $(BUILD)/engine/main.d

deps:
	@sh tests/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tools/demo.sh

# The README's test command. tests/run prints "N passed, N failed" last.
test: all
	@BUILD=$(BUILD) MURMUR_TEST_JOBS=$(TEST_JOBS) sh tests/run all $(TEST_ARGS)

unit: all
	@BUILD=$(BUILD) sh tests/run unit

spec: all
	@BUILD=$(BUILD) MURMUR_TEST_JOBS=$(TEST_JOBS) sh tests/run spec

# The sanitizer build (check-build alone builds it, so CI can compile it
# while something else runs) and the whole suite on it.
CHECK_VARS := BUILD=build/asan SANITIZE=address,undefined OPT=-O1

# The JSON scanner's portable code (json_string.h: eight bytes at a time,
# for CPUs without SSE2), which an x86-64 build never takes: test_json built
# with it forced, in build/portable, and run by make check.
PORTABLE_VARS := BUILD=build/portable CFLAGS=-DMM_JSON_PORTABLE

check-build:
	$(MAKE) $(CHECK_VARS) all
	$(MAKE) $(PORTABLE_VARS) build/portable/tests/test_json

# make check skips the #rock spec (tests/run, MURMUR_SKIP_TAGS): its 70-100 s
# go to luarocks make building an unsanitized binary of its own and to make
# install, after which the sanitized binary runs one murmur check (#check
# runs it too), so the sanitizers would see almost nothing; make test runs it.
# The #release spec likewise only builds unsanitized binaries.
# It also leaves out the cases tagged #long: each takes a minute or more of
# waiting on leases and services to run paths that other cases of its file
# already run under the sanitizers (make test runs them all).
check:
	$(MAKE) $(PORTABLE_VARS) build/portable/tests/test_json
	build/portable/tests/test_json
	MURMUR_SKIP_TAGS=rock,release $(MAKE) $(CHECK_VARS) TEST_ARGS=--exclude-tags=long test

fuzz:
	@BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) sh tests/fuzz/run.sh $(FUZZ_SRC)

# The bench measures the release binary, what LuaRocks installs (B0 is
# built the same way); the gate counts the plain build's instructions,
# which no training run's timing can move.
bench: all $(BENCH_BIN) release
	@BUILD=$(BUILD) MURMUR=build/release/murmur sh tests/bench/run.sh

perfgate: all $(BUILD)/bench/fixed_seed.so
	@BUILD=$(BUILD) sh tests/bench/perfgate.sh

# LD_PRELOADed by the gate only: a fixed seed for LuaJIT's PRNG.
$(BUILD)/bench/fixed_seed.so: tests/bench/fixed_seed.c
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) -shared -fPIC -o $@ $< -ldl

$(BUILD)/bench/marks: tests/bench/marks.c $(BUILD)/libmurmur.a
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ $< $(BUILD)/libmurmur.a $(LIBS) $(RDK_LIBS)

$(BUILD)/bench/baseline: tests/bench/baseline.c tests/bench/baseline_build.sh $(BUILD)/helpers/gen_events
	@CC="$(CC) $(MM_CFLAGS) $(MM_LDFLAGS)" sh tests/bench/baseline_build.sh $(BUILD)

$(BUILD)/bench/%: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -o $@ $< -llmdb

# The Lambda zip (tools/lambda_zip.sh says what it holds and why; doc/kinesis.md
# how to deploy it). It carries a release binary, built in $(BUILD)/lambda
# by tools/release.sh (as the LuaRocks build), and bundles the libraries that
# binary links.
lambda:
	@RELEASE_PGO="$(RELEASE_PGO)" MAKE="$(MAKE)" sh tools/release.sh $(BUILD)/lambda
	sh tools/lambda_zip.sh $(BUILD)/lambda/murmur $(BUILD)/murmur-lambda.zip

# The man page and the completions are generated from the help text by the
# built binary (murmur help --man, murmur completion bash|zsh).
GEN_DEPS := $(BUILD)/murmur $(wildcard lua/murmur/*.lua) $(wildcard pipelines/*.lua)

$(BUILD)/share/murmur.1: $(GEN_DEPS)
	@mkdir -p $(dir $@)
	MURMUR_LUA_DIR=$(CURDIR)/lua $(BUILD)/murmur help --man >$@.tmp && mv $@.tmp $@

$(BUILD)/share/murmur.bash $(BUILD)/share/_murmur: $(BUILD)/share/%: $(GEN_DEPS)
	@mkdir -p $(dir $@)
	MURMUR_LUA_DIR=$(CURDIR)/lua $(BUILD)/murmur completion $(if $(filter _murmur,$*),zsh,bash) >$@.tmp && mv $@.tmp $@

# The binary, the Lua modules, the shipped pipelines as murmur.pipelines.NAME
# (so `murmur run NAME` finds them), murmur(1) and the bash/zsh completions.
install: $(BUILD)/murmur $(BUILD)/share/murmur.1 $(BUILD)/share/murmur.bash $(BUILD)/share/_murmur
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/murmur/pipelines $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 $(BUILD)/murmur $(DESTDIR)$(BINDIR)/murmur
	install -m 644 lua/murmur/*.lua $(DESTDIR)$(LUADIR)/murmur/
	install -m 644 pipelines/*.lua $(DESTDIR)$(LUADIR)/murmur/pipelines/
	install -m 644 $(BUILD)/share/murmur.1 $(DESTDIR)$(MANDIR)/man1/murmur.1
	install -m 644 $(BUILD)/share/murmur.bash $(DESTDIR)$(BASHCOMPDIR)/murmur
	install -m 644 $(BUILD)/share/_murmur $(DESTDIR)$(ZSHCOMPDIR)/_murmur

format:
	clang-format -i $$(find engine tests/unit tests/fuzz tests/helpers -name '*.[ch]')

clean:
	rm -rf build
