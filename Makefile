# murmur: build, test and install.
#
#   make            build build/murmur (warnings are errors)
#   make deps       install the Debian packages murmur needs (idempotent)
#   make demo       deps + build + run recently_interacted on sample events + query
#   make test       C unit tests, busted specs, end-to-end specs; last line "N passed, N failed"
#   make check      the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       build the libFuzzer targets and run each for FUZZ_SECONDS
#   make bench      CPU per event of the shipped pipelines as ratios against the B0
#                   baseline, plus rates, RSS, recovery and store figures (minutes)
#   make perfgate   instructions per event (callgrind) against tests/bench/perf_budget.txt;
#                   fails above budget + 10% (PERF_RECORD=1 re-records the budget)
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

PKGS      := luajit libuv lmdb rdkafka hiredis libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifeq ($(PKG_LIBS),)
PKG_CFLAGS := -I/usr/include/luajit-2.1
PKG_LIBS   := -lluajit-5.1 -luv -llmdb -lrdkafka -lhiredis -lcurl
endif

OPT       ?= -O2
# Error-injection points (tarantool errinj style) are compiled into every
# build the tests use; the LuaRocks build turns them off (ERRINJ=0).
ERRINJ    ?= 1
WARN      := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
MM_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -fno-strict-aliasing $(PKG_CFLAGS) $(CFLAGS)
MM_LDFLAGS := $(LDFLAGS)
ifeq ($(ERRINJ),1)
MM_CFLAGS  += -DMM_ERRINJ
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
GEN_OBJ    := $(BUILD)/gen/valkey_lua.o $(BUILD)/gen/admin_page.o
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o) $(GEN_OBJ)
PURE_OBJ   := $(PURE_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRC := $(sort $(wildcard tests/helpers/*.c))
HELPER_BIN := $(HELPER_SRC:tests/helpers/%.c=$(BUILD)/helpers/%)
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
# The bench's own programs: the B0 baseline and the CPU-time wrapper
# (standalone: they link no engine code; neither does perfgate's preload).
BENCH_BIN  := $(BUILD)/bench/baseline $(BUILD)/bench/cpu

.PHONY: all demo rock deps test check fuzz bench perfgate install clean unit spec format

all: $(BUILD)/murmur $(UNIT_BIN) $(HELPER_BIN)

# LuaRocks builds only the binary (see murmur-dev-1.rockspec).
rock: $(BUILD)/murmur

$(BUILD)/murmur: $(BUILD)/engine/main.o $(BUILD)/libmurmur.a
	$(CC) $(MM_LDFLAGS) -rdynamic -o $@ $< -Wl,--whole-archive $(BUILD)/libmurmur.a -Wl,--no-whole-archive $(LIBS)

$(BUILD)/libmurmur.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
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

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(MM_CFLAGS) -Iengine -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmurmur.a tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ $< $(BUILD)/libmurmur.a $(LIBS)

$(BUILD)/helpers/%: tests/helpers/%.c $(BUILD)/libmurmur.a
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -Iengine -o $@ $< $(BUILD)/libmurmur.a $(LIBS)

-include $(ENGINE_OBJ:.o=.d) $(BUILD)/engine/main.d

deps:
	@sh tests/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tools/demo.sh

# The README's test command. tests/run prints "N passed, N failed" last.
test: all
	@BUILD=$(BUILD) sh tests/run

unit: all
	@BUILD=$(BUILD) sh tests/run unit

spec: all
	@BUILD=$(BUILD) sh tests/run spec

check:
	$(MAKE) BUILD=build/asan SANITIZE=address,undefined OPT=-O1 test

fuzz:
	@BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh $(FUZZ_SRC)

bench: all $(BENCH_BIN)
	@BUILD=$(BUILD) sh tests/bench/run.sh

perfgate: all $(BUILD)/bench/fixed_seed.so
	@BUILD=$(BUILD) sh tests/bench/perfgate.sh

# LD_PRELOADed by the gate only: a fixed seed for LuaJIT's PRNG.
$(BUILD)/bench/fixed_seed.so: tests/bench/fixed_seed.c
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) -shared -fPIC -o $@ $< -ldl

$(BUILD)/bench/%: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(MM_CFLAGS) $(MM_LDFLAGS) -o $@ $< -llmdb

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
