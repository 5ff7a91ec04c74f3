-- wrk script for tests/bench/serve.lua: POSTs $BODY as Connect JSON, with
-- ENTITY in it replaced by 1..1000 in turn, so requests spread over the
-- entities instead of hitting one key.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body, i = os.getenv("BODY"), 0
request = function()
  i = i % 1000 + 1
  return wrk.format(nil, nil, nil, (body:gsub("ENTITY", tostring(i))))
end
