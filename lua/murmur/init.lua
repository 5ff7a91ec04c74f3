-- murmur: the module scripts get from require("murmur").
--
-- Inside a pipeline script (loaded by murmur run/check/query) `require "murmur"`
-- returns the DSL bound to that load. Outside (a busted spec, a REPL) this
-- module is the same DSL bound to a collector of its own, which is handy for
-- testing declarations: murmur.pipeline{...} returns the validated spec.
local dsl = require("murmur.dsl")

return dsl.bind(dsl._new_collector())
