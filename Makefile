# cachy for Lua: build, test, benchmark.
# `make demo` and `make check` are the two commands the README starts with.

LUA        ?= lua5.4
LUAJIT     ?= luajit
LUA_INC    ?= /usr/include/lua5.4
LUAJIT_INC ?= /usr/include/luajit-2.1
CC         ?= cc
OPT        ?= -O2
CFLAGS     ?= $(OPT) -g -Wall -Wextra -Wshadow -Wno-unused-parameter
HIREDIS_INC ?= /usr/include/hiredis
LIBS       ?= -lmsgpackc -ljansson -lhiredis -lmemcached -lxxhash
PREFIX     ?= /usr/local
INST_LIBDIR ?= $(PREFIX)/lib/lua/5.4
INST_LUADIR ?= $(PREFIX)/share/lua/5.4

# Debian packages the build, the tests and the benchmarks need. LuaJIT is
# luajit2, OpenResty's branch: what OpenResty runs, and what Debian's nginx
# Lua module needs (it conflicts with the luajit package). nginx-light and
# libnginx-mod-http-lua (with lua-resty-core and lua-resty-lrucache) are the
# host of spec/nginx, examples/openresty and bench/nginx (loaded by wrk);
# `deps` installs them without starting a system nginx on port 80 (see the
# recipe).
DEPS = build-essential pkg-config lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev \
       lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev \
       luarocks lua-busted lua-cjson libhiredis-dev libmemcached-dev libmsgpack-dev libjansson-dev \
       libxxhash-dev redis-server memcached valgrind python3 python3-msgpack python3-redis \
       curl nginx-light libnginx-mod-http-lua lua-resty-core lua-resty-lrucache wrk

SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h)
ALLCFLAGS = -std=gnu11 -fPIC -fvisibility=hidden -I$(HIREDIS_INC) $(CFLAGS)

MODULE    = csrc/cachy/core.so
# The versioned release's source rock (`make rock`).
ROCK_VERSION = 0.2.0
ROCK = build/cachy-$(ROCK_VERSION)-1.src.rock
MODULE_JIT = build/luajit/cachy/core.so
MODULE_ASAN = build/asan/cachy/core.so
# The other PUC Lua versions: build/lua5.N/cachy/core.so (`make lua5.1` ...).
OTHER_LUAS = lua5.1 lua5.2 lua5.3
MODULES_OTHER = $(OTHER_LUAS:%=build/%/cachy/core.so)

.PHONY: all luajit $(OTHER_LUAS) demo check asan valgrind bench stampede openresty deps install clean rock rock-check

all: $(MODULE)

luajit: $(MODULE_JIT)

$(OTHER_LUAS): %: build/%/cachy/core.so

# One rule per kind of build; LUA_HEADERS says which Lua each is for.
$(MODULE): LUA_HEADERS = $(LUA_INC)
$(MODULE_JIT): LUA_HEADERS = $(LUAJIT_INC)
$(MODULES_OTHER): LUA_HEADERS = /usr/include/$(patsubst build/%/cachy/core.so,%,$@)

$(MODULE) $(MODULE_JIT) $(MODULES_OTHER): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -I$(LUA_HEADERS) -shared -o $@ $(SRCS) $(LIBS)

# spec_process (spec/helpers/process.c): fork and wait for the specs, built
# for the interpreters that run the server specs.
SPEC_PROCESS = build/lua5.4/spec_process.so build/luajit/spec_process.so
build/lua5.4/spec_process.so: LUA_HEADERS = $(LUA_INC)
build/luajit/spec_process.so: LUA_HEADERS = $(LUAJIT_INC)

$(SPEC_PROCESS): spec/helpers/process.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -fPIC -shared $(CFLAGS) -I$(LUA_HEADERS) -o $@ $<

$(MODULE_ASAN): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -fPIC -I$(HIREDIS_INC) -O1 -g -fno-omit-frame-pointer \
	  -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	  -I$(LUA_INC) -shared -o $@ $(SRCS) $(LIBS)

# A package's install starts no service (nginx would take port 80): an
# /usr/sbin/policy-rc.d that answers 101 ("action forbidden") stands while
# apt-get runs, and is removed after when this recipe wrote it.
deps:
	@missing=""; for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  norc=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\n# written by cachy make deps: start no service\nexit 101\n' >/usr/sbin/policy-rc.d && \
	    chmod 0755 /usr/sbin/policy-rc.d && norc=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  rc=$$?; \
	  if [ -n "$$norc" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi

demo: deps all
	$(LUA) -e 'package.path="lua/?.lua;lua/?/init.lua;"..package.path; package.cpath="csrc/?.so;"..package.cpath' examples/quickstart.lua

# The suite under Lua 5.4 and LuaJIT, the binding's specs under Lua 5.1, 5.2
# and 5.3, the rock, 5.4 once more on the ASan + UBSan build, then the nginx
# suites (examples/openresty/run, spec/nginx/run, spec/nginx/stall: LuaJIT
# module) and the source rock (spec/nginx/rock, `make rock-check`); one "N passed,
# N failed" line counts them all.
check: deps all luajit $(MODULES_OTHER) $(MODULE_ASAN) $(SPEC_PROCESS) $(ROCK)
	CACHY_OTHER_LUAS="$(OTHER_LUAS)" CACHY_ASAN_CPATH=build/asan/?.so \
	  CACHY_ASAN_PRELOAD="$$($(CC) -print-file-name=libasan.so):$$($(CC) -print-file-name=libubsan.so)" \
	  spec/run

asan: deps $(MODULE_ASAN) $(SPEC_PROCESS)
	CACHY_CPATH=build/asan/?.so CACHY_ONLY_LUA54=1 \
	  LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  spec/run

VALGRIND = valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
	--suppressions=spec/helpers/valgrind.supp

# The suite on Lua 5.4, then LuaJIT's FFI path (which reads the memory
# store's items from Lua) on the specs that take it.
valgrind: deps all luajit $(SPEC_PROCESS)
	CACHY_ONLY_LUA54=1 CACHY_SLOW=1 CACHY_WRAP="$(VALGRIND) --log-file=build/valgrind.%p.log" \
	  spec/run
	CACHY_SLOW=1 $(VALGRIND) --log-file=build/valgrind-luajit.%p.log \
	  $(LUAJIT) /usr/bin/busted --cpath="build/luajit/?.so" -o TAP \
	  spec/10-memory_spec.lua spec/13-jit_spec.lua spec/21-decorator_spec.lua >build/valgrind-luajit.tap; \
	status=$$?; grep -v '^ok ' build/valgrind-luajit.tap; \
	echo "luajit under valgrind: $$(grep -c '^ok ' build/valgrind-luajit.tap) passed," \
	  "$$(grep -c '^not ok ' build/valgrind-luajit.tap) failed (build/valgrind-luajit.*.log)"; \
	exit $$status

bench: deps all luajit
	bench/run

# Single flight under a stampede (bench/stampede/run; bench/RESULTS.md):
# 50 processes, and wrk inside nginx, on a cold key; flexible's stale answers.
stampede: deps all luajit
	bench/stampede/run

# nginx with the Lua module: examples/openresty/run (a manager made in the
# master, two workers) and spec/nginx/run (callbacks and a Lua store that
# yield on cosockets, inside one worker) and spec/nginx/stall (a stopped
# redis-server does not stall the worker). Each ends with "N passed, N failed".
openresty: deps luajit
	@st=0; examples/openresty/run || st=1; spec/nginx/run || st=1; spec/nginx/workers || st=1; spec/nginx/stall || st=1; exit $$st

install: all
	install -d $(DESTDIR)$(INST_LIBDIR)/cachy $(DESTDIR)$(INST_LUADIR)/cachy
	install -m 0755 $(MODULE) $(DESTDIR)$(INST_LIBDIR)/cachy/core.so
	install -m 0644 lua/cachy/*.lua $(DESTDIR)$(INST_LUADIR)/cachy/
	install -d $(DESTDIR)$(INST_LUADIR)/cachy/resty
	install -m 0644 lua/cachy/resty/*.lua $(DESTDIR)$(INST_LUADIR)/cachy/resty/

# A source rock of the working tree: build/cachy-$(ROCK_VERSION).tar.gz holds
# every file git knows and every untracked one it does not ignore (deleted
# ones left out), under cachy-$(ROCK_VERSION)/. The rock is what `luarocks
# pack` makes, a zip of the rockspec and that archive side by side, zipped
# here (python3's zipfile) because `luarocks pack` fetches the source URL
# from a temp dir, where the rockspec's relative one is not found. `luarocks
# install` of a .src.rock takes the archive in the rock and fetches nothing.
# Install it with
#   luarocks --lua-version=5.4 --tree T install build/cachy-$(ROCK_VERSION)-1.src.rock
# (README, "Install", has the LuaJIT/OpenResty command).
rock: $(ROCK)

$(ROCK): rockspec/cachy-$(ROCK_VERSION)-1.rockspec $(SRCS) $(HDRS) $(wildcard lua/cachy/*.lua lua/cachy/*/*.lua)
	@mkdir -p build
	rm -f build/cachy-$(ROCK_VERSION).tar.gz $@
	git ls-files --cached --others --exclude-standard | while IFS= read -r f; do \
	  [ -f "$$f" ] && printf '%s\n' "$$f"; done | sort -u | \
	  tar --create --gzip --file build/cachy-$(ROCK_VERSION).tar.gz --files-from - \
	    --transform 's,^,cachy-$(ROCK_VERSION)/,' --owner=0 --group=0 --numeric-owner
	cp rockspec/cachy-$(ROCK_VERSION)-1.rockspec build/
	cd build && python3 -m zipfile -c $(notdir $@) cachy-$(ROCK_VERSION)-1.rockspec cachy-$(ROCK_VERSION).tar.gz

# The rock installed into a fresh tree for Lua 5.4 and for LuaJIT, then
# loaded by nginx from that tree (spec/nginx/rock); "N passed, N failed".
rock-check: deps $(ROCK)
	spec/nginx/rock

clean:
	rm -rf build $(MODULE)

# ---- fuzzing, soak and load tests (fuzz/README.md, soak/README.md) ----------
# Harnesses are built with clang's libFuzzer, ASan and UBSan; each runs
# FUZZ_SECONDS at nice 19. `make soak` and `make load` need the servers.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
LUA_LIB      ?= -llua5.4
FUZZ_CFLAGS  = -std=gnu11 -g -O1 -fno-omit-frame-pointer \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
               -Wall -Wextra -Wshadow -Wno-unused-parameter -Icsrc -I$(HIREDIS_INC) -I$(LUA_INC)
FUZZERS = build/fuzz/fuzz_decode build/fuzz/fuzz_file build/fuzz/fuzz_memcached_key \
          build/fuzz/fuzz_redis_reply

.PHONY: fuzz fuzz-deps fuzzers soak load

fuzzers: $(FUZZERS)

build/fuzz/fuzz_decode: fuzz/fuzz_decode.c csrc/codec.c csrc/util.c csrc/hash.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_decode.c csrc/codec.c csrc/util.c csrc/hash.c \
	  $(LUA_LIB) -lmsgpackc -lxxhash -lm

build/fuzz/fuzz_file: fuzz/fuzz_file.c csrc/store_file.c csrc/util.c csrc/hash.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_file.c csrc/util.c csrc/hash.c -lxxhash -lm

build/fuzz/fuzz_redis_reply: fuzz/fuzz_redis_reply.c csrc/store_redis.c csrc/redis_proto.c \
                             csrc/util.c csrc/hash.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_redis_reply.c csrc/redis_proto.c csrc/util.c \
	  csrc/hash.c -lhiredis -lxxhash -lm

build/fuzz/fuzz_memcached_key: fuzz/fuzz_memcached_key.c csrc/store_memcached.c csrc/memcached_wire.c csrc/util.c csrc/hash.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_memcached_key.c csrc/memcached_wire.c csrc/util.c csrc/hash.c \
	  -lmemcached -lxxhash -lm

# libFuzzer's runtime comes with clang's runtime package, needed only here.
fuzz-deps:
	@$(MAKE) --no-print-directory deps DEPS="clang libclang-rt-14-dev"

fuzz: deps fuzz-deps all $(FUZZERS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run $(notdir $(FUZZERS:build/fuzz/fuzz_%=%))

soak: deps all
	soak/run soak

load: deps all
	soak/run load
