-- LuaRocks packaging: `luarocks --lua-version=5.1 make --tree TREE
-- murmur-dev-1.rockspec` builds the murmur binary with the Makefile and
-- installs it with the Lua modules and the shipped pipelines (modules
-- murmur.pipelines.NAME, so `murmur run NAME` finds them) into the tree.
-- No rock dependencies (works offline with Debian's luarocks 3.8); the C
-- libraries come from Debian packages (`make deps`).
rockspec_format = "3.0"
package = "murmur"
version = "dev-1"
source = { url = "git+https://example.invalid/murmur.git" }
description = {
  summary = "Streaming aggregation engine in C with LuaJIT pipeline scripts",
  detailed = "Monoid aggregations (sum, count, min, max, first, last, set, HyperLogLog, Top-K, Bloom) over tumbling windows, fed by sources and kept in an embedded LMDB store.",
  license = "MIT",
}
dependencies = { "lua >= 5.1" }
external_dependencies = {
  LUAJIT = { header = "luajit-2.1/luajit.h", library = "luajit-5.1" },
  LIBUV = { header = "uv.h", library = "uv" },
  LMDB = { header = "lmdb.h", library = "lmdb" },
  RDKAFKA = { header = "librdkafka/rdkafka.h", library = "rdkafka" },
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "make",
  build_target = "rock",
  build_variables = { CFLAGS = "$(CFLAGS)", BUILD = "build/rock", ERRINJ = "0" },
  install_pass = false,
  install = {
    bin = { murmur = "build/rock/murmur" },
    lua = {
      ["murmur.cdef"] = "lua/murmur/cdef.lua",
      ["murmur.fieldplan"] = "lua/murmur/fieldplan.lua",
      ["murmur.check"] = "lua/murmur/check.lua",
      ["murmur.cli"] = "lua/murmur/cli.lua",
      ["murmur.completion"] = "lua/murmur/completion.lua",
      ["murmur.ddb"] = "lua/murmur/ddb.lua",
      ["murmur.dsl"] = "lua/murmur/dsl.lua",
      ["murmur.grants"] = "lua/murmur/grants.lua",
      ["murmur.help"] = "lua/murmur/help.lua",
      ["murmur.helpdoc"] = "lua/murmur/helpdoc.lua",
      ["murmur.hooks"] = "lua/murmur/hooks.lua",
      ["murmur.init"] = "lua/murmur/init.lua",
      ["murmur.isolate"] = "lua/murmur/isolate.lua",
      ["murmur.loader"] = "lua/murmur/loader.lua",
      ["murmur.manpage"] = "lua/murmur/manpage.lua",
      ["murmur.progress"] = "lua/murmur/progress.lua",
      ["murmur.query"] = "lua/murmur/query.lua",
      ["murmur.serve"] = "lua/murmur/serve.lua",
      ["murmur.reload"] = "lua/murmur/reload.lua",
      ["murmur.runner"] = "lua/murmur/runner.lua",
      ["murmur.lambda"] = "lua/murmur/lambda.lua",
      ["murmur.runtime"] = "lua/murmur/runtime.lua",
      ["murmur.shipped"] = "lua/murmur/shipped.lua",
      ["murmur.status"] = "lua/murmur/status.lua",
      ["murmur.admin"] = "lua/murmur/admin.lua",
      -- The shipped pipelines, found by name (murmur run recently_interacted).
      ["murmur.pipelines.page_views"] = "pipelines/page_views.lua",
      ["murmur.pipelines.recently_interacted"] = "pipelines/recently_interacted.lua",
      ["murmur.pipelines.unique_visitors"] = "pipelines/unique_visitors.lua",
    },
  },
}
test = { type = "command", command = "make test" }
