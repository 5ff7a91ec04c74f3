-- page_views: how many times each page was viewed, per day, kept 90 days.
local murmur = require("murmur")

murmur.pipeline {
  name = "page_views",
  description = "views per page_id, daily, 90 days",
  key = "page_id",
  monoid = murmur.sum {},
  value = 1,
  window = murmur.daily { retention = "90d" },
}
