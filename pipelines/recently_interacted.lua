-- recently_interacted: the entities people interacted with most.
--
-- One Top-K (Misra-Gries, K = 32) of entity_id over every interaction, under
-- the single key "global", in daily buckets kept 30 days. Replays of the same
-- event (same event_id) are counted once; events without an id are counted
-- as they come. Which source feeds it (stdin, a file or a Kafka topic)
-- and which store keeps it are deployment choices made on the command line or
-- in the environment, not here.
local murmur = require("murmur")

murmur.pipeline {
  name = "recently_interacted",
  description = "Top-32 entity_id over all interactions, daily, 30 days",
  key = murmur.literal("global"),
  value = "entity_id",
  monoid = murmur.topk { k = 32 },
  window = murmur.daily { retention = "30d" },
  dedup = { id = "event_id", ttl = "2d" },
}
