-- unique_visitors: distinct user_id per page_id, per day (HyperLogLog,
-- Valkey's own byte format), kept 90 days.
local murmur = require("murmur")

murmur.pipeline {
  name = "unique_visitors",
  description = "distinct user_id per page_id, daily, 90 days",
  key = "page_id",
  value = "user_id",
  monoid = murmur.hll(),
  window = murmur.daily { retention = "90d" },
}
