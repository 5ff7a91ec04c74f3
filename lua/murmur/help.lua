-- murmur.help: the text `murmur help [COMMAND]` and `murmur COMMAND --help`
-- print. It is the single source of the command-line reference: the man page
-- (murmur.manpage, `murmur help --man`) and the shell completions
-- (murmur.completion, `murmur completion bash|zsh`) are generated from it
-- through murmur.helpdoc, so they cannot drift from what the binary says.
local HELP = {
  main = [[
usage: murmur <command> [options]

commands:
  run SCRIPT...          run pipelines until stopped (or end of input with --once)
  query TARGET ENTITY    print an entity's aggregate (TARGET: script or pipeline name)
  serve [SCRIPT...]      answer queries over HTTP: Connect and gRPC (doc/query.md)
  lambda [SCRIPT]        run as an AWS Lambda custom runtime (doc/kinesis.md)
  check SCRIPT...        validate pipeline scripts without running them
  status [--data DIR]    show a running instance's counters, reloads and sources
  reload [--data DIR]    ask a running instance to reload its scripts (SIGHUP)
  ddb COMMAND            DynamoDB store administration (create-table, claims)
  test [BUSTED ARGS]     run busted specs inside murmur (murmur.core available)
  lua FILE [ARGS]        run a Lua file inside murmur (benchmarks, tools)
  version                print the version
  completion bash|zsh    print a shell completion script
  help [COMMAND]         show help for a command (--man: the man page)

Run `murmur <command> --help` for the options of a command.
]],
  run = [[
usage: murmur run SCRIPT... [options]

Runs every pipeline the scripts define, on one event loop.
  --data DIR         data directory (default $MURMUR_DATA or ./murmur-data)
  --input FILE       input of murmur.input() sources: a JSON Lines file, or - for
                     stdin (default $MURMUR_INPUT or stdin)
  --follow           keep reading FILE as it grows and across rotation (tail -F)
  --consumer NAME    who reads the input files: positions are stored per file and
                     consumer, so other names read a file for themselves (default
                     the data directory's path; doc/dynamodb.md, "Positions")
  --once             stop at the end of the input (flush, checkpoint, exit 0)
  --store KIND       lmdb (default, durable), dynamodb (shared; doc/dynamodb.md)
                     or memory (tests; nothing persists)
  --cache URL        keep a Valkey cache of the store, e.g. redis://127.0.0.1:6379
                     (default $MURMUR_VALKEY_URL; doc/valkey.md)
  --log-level LEVEL  error, warn, info (default) or debug
  --stats            print the counters as JSON on stdout when stopping
  --watchdog DUR     restart the worker when it stalls this long (default 10s)
  --lua-memory SIZE  Lua heap limit of the worker (default 1g)
  --no-supervisor    run the pipelines in this process (no watchdog)
  --progress DUR     with --once, report progress every DUR on stderr (default
                     5s or $MURMUR_PROGRESS_INTERVAL; 0 for none)
  --kafka-brokers B  murmur.input() reads Kafka from these bootstrap brokers
                     (host:port,...; default $MURMUR_KAFKA_BROKERS); also
                     overrides murmur.kafka{} sources' brokers
  --kafka-topic T    topic(s), comma-separated ($MURMUR_KAFKA_TOPIC)
  --kafka-group G    consumer group (default $MURMUR_KAFKA_GROUP or murmur)
  --kafka-start S    earliest (default) or latest, for partitions without an
                     offset ($MURMUR_KAFKA_START)
  -X KEY=VALUE       a librdkafka property, e.g. -X security.protocol=SASL_SSL
                     (repeatable; also $MURMUR_KAFKA_PROPERTIES="k=v;k=v");
                     see doc/kafka.md
  --kinesis-stream S murmur.kinesis{} sources read this stream
                     ($MURMUR_KINESIS_STREAM); see doc/kinesis.md
  --kinesis-start S  trim_horizon (default), latest or at_timestamp:<epoch ms>,
                     for shards without a position ($MURMUR_KINESIS_START)
  --kinesis-endpoint URL  Kinesis endpoint, e.g. http://127.0.0.1:4567 (default
                     $MURMUR_KINESIS_ENDPOINT, else AWS's for the region)
  --kinesis-region R AWS region of the stream (default $AWS_REGION)
  --kinesis-lease-table T  share the shards with the other workers of this
                     DynamoDB lease table (KCL schema; endpoint
                     $MURMUR_DYNAMODB_ENDPOINT; $MURMUR_KINESIS_LEASE_TABLE)
  --allow CAP[,CAP]  grant the scripts a capability (repeatable; also
                     $MURMUR_ALLOW): io, os, path:DIR, net:HOST:PORT, env:NAME,
                     kafka:PROPERTY; see doc/security.md
  --listen ADDR      also serve the query service, /metrics and the admin page
                     on HOST:PORT, as murmur serve does (doc/query.md)
  --token-file FILE  with --listen: the bearer token (default $MURMUR_TOKEN)
  --cors-origin O    with --listen: allow browser calls from O (repeatable)
  --request-timeout DUR  with --listen: slow-client cutoff (default 10s)
  --max-connections N  with --listen: connections at once (default 1024)
  --result-cache DUR with --listen: keep answers DUR (fresh_read skips it)
SIGINT/SIGTERM stop gracefully: stop reading, flush, checkpoint, exit 0.
Saving a script (or a module it requires), SIGHUP or `murmur reload` reloads
it without stopping; an invalid version is refused and the old one keeps
running.
]],
  lambda = [[
usage: murmur lambda [SCRIPT] [options]

Serves AWS Lambda invocations (Kinesis, SQS or DynamoDB Streams batches) with
the pipelines of SCRIPT (default $_HANDLER, relative to $LAMBDA_TASK_ROOT),
through the Runtime API at $AWS_LAMBDA_RUNTIME_API. The events replace the
script's sources; each invocation's records are made durable before it is
answered, and the records that are not are returned as batchItemFailures.
The script, the store and its credentials ($AWS_ACCESS_KEY_ID,
$AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN) stay loaded across invocations.
See doc/kinesis.md.
  --store KIND       dynamodb (shared, the usual choice on Lambda), lmdb or
                     memory (default $MURMUR_STORE or lmdb)
  --data DIR         data directory (default $MURMUR_DATA or /tmp/murmur-data)
  --consumer NAME    whose shard positions these are: stored as
                     lambda:<stream ARN>/<shard>#NAME (default the function
                     name, $AWS_LAMBDA_FUNCTION_NAME)
  --margin DUR       time kept before the invocation's deadline: a flush still
                     running then is reported as failed records (default 1s)
  --cache URL        keep a Valkey cache of the store (doc/valkey.md)
  --log-level LEVEL  error, warn, info (default) or debug
  --stats            print the counters as JSON on stdout when stopping
  --allow CAP[,CAP]  grant the script a capability, as run does (repeatable)
]],
  query = [[
usage: murmur query SCRIPT|PIPELINE ENTITY [options]

Reads the store (also while `murmur run` is writing it) and prints the
aggregate of ENTITY. For windowed pipelines the default is every bucket still
inside the retention.
  --window N         the last N of time, e.g. 7d = today and the 6 days before
  --from T --to T    an inclusive range of RFC 3339 times or dates (2026-11-01)
  --at T             evaluate windows as if now were T (default: now)
  --pipeline NAME    which pipeline, when SCRIPT defines several
  --data DIR         data directory; repeat to merge several workers' stores
  --store KIND       lmdb (default) or dynamodb (options from the script's
                     murmur.store{} and the environment, doc/dynamodb.md)
  --cache URL        read through the Valkey cache the writers keep (default
                     $MURMUR_VALKEY_URL; one store only; doc/valkey.md)
  --json             print JSON instead of text
  --top N            print only the first N Top-K items (default all)
  --stats            print the reads' instrumentation as JSON on stderr:
                     PIPELINE:store_get (one bucket) or :store_get_many
                     (a window) and the cache's cache_* commands
  --allow CAP[,CAP]  grant SCRIPT a capability, as run does (repeatable; also
                     $MURMUR_ALLOW; doc/security.md)
]],
  serve = [[
usage: murmur serve [SCRIPT...] [options]

Serves the murmur.v1.QueryService (proto/murmur/v1/query.proto) over the
Connect protocol (HTTP/1.1 and HTTP/2, JSON or binary, POST or GET) and gRPC
(HTTP/2 cleartext), on one port, from the stores `murmur run` writes (also
while it writes them). The SCRIPTs, if any, name the store (murmur.store{});
every pipeline in the store is served. See doc/query.md.
  --listen ADDR      HOST:PORT to listen on (default 127.0.0.1:8080); any
                     address other than loopback requires a token
  --token-file FILE  require "Authorization: Bearer TOKEN" (the file's first
                     line; default $MURMUR_TOKEN) on every path but /healthz
  --cors-origin O    allow browser calls from origin O (repeatable; * for any);
                     CORS is off without it
  --data DIR         data directory; repeat to merge several workers' stores
  --store KIND       lmdb (default) or dynamodb (options from the script's
                     murmur.store{} and the environment, doc/dynamodb.md)
  --cache URL        read through the Valkey cache the writers keep (default
                     $MURMUR_VALKEY_URL; one store only; doc/valkey.md)
  --request-timeout DUR  close a connection whose request has not arrived
                     whole after DUR (default 10s: slow clients)
  --max-connections N  connections open at once (default 1024); more are
                     closed at once
  --result-cache DUR keep each answer DUR (e.g. 500ms) and serve repeats of it
                     without reading the store; requests with fresh_read skip
                     it (default: no cache)
  --allow CAP[,CAP]  grant the scripts a capability, as run does (repeatable;
                     also $MURMUR_ALLOW; doc/security.md)
SIGINT/SIGTERM stop it: no new connections, reads in flight finish, exit 0.
]],
  check = [[
usage: murmur check SCRIPT... [--input FILE] [--lines N] [--json] [--allow CAP]

Loads and validates the scripts exactly as `run` would, without reading input
or opening the store. Prints each pipeline, or file:line and the problem.
  --input FILE       also dry-run every pipeline on the first lines of FILE (- for
                     stdin) with run's own extraction: per line and pipeline, the
                     key(s), the value the monoid gets, the event time, the bucket
                     and the dedup id, or the dead-letter reason and message run
                     would give; then a summary per pipeline. Writes nothing.
  --lines N          how many lines (default 10; empty lines are skipped as run
                     skips them)
  --json             one JSON object per line and pipeline on stdout (summary on
                     stderr)
  --allow CAP[,CAP]  grant the scripts a capability, as run does (repeatable;
                     also $MURMUR_ALLOW; doc/security.md)
Exit 0 when valid (and every sampled line would be accepted or skipped as a
duplicate), 1 when some sampled line would be rejected, 2 for a usage error
(such as an unreadable --input), 3 for an invalid script.
]],
  test = [[
usage: murmur test [BUSTED ARGS]

Runs busted (Debian's lua-busted) inside the murmur binary, so specs can
require("murmur.core") and the FFI symbols resolve. Arguments go to busted,
e.g. `murmur test -o TAP tests/spec`.
]],
  version = "usage: murmur version\n",
  status = [[
usage: murmur status [--data DIR] [--json]

Prints the counters of the instance running on DIR (default $MURMUR_DATA or
./murmur-data) from DIR/status.json, which a running `murmur run` rewrites
every second: records, accepted, duplicates, rejections by reason, dead
letters, flushes, the event loop's lag (largest since start and over the
last 10 s), reloads (ok/failed/last error/script version), sources.
Exit 0 while the instance runs (the text says when its file is stale), 1
when it has exited (the last status follows "not running"), 4 when there is
no status file.
]],
  reload = [[
usage: murmur reload [--data DIR]

Sends SIGHUP to the instance running on DIR (its pid is in DIR/murmur.pid),
which reloads its scripts; the outcome shows in `murmur status`.
Exit 0 when signalled, 4 when no instance runs there.
]],
  completion = [[
usage: murmur completion bash|zsh

Prints a completion script for the shell: the commands, each command's
options and their values, and for SCRIPT arguments the shipped pipelines
and *.lua files. It is generated from this help text. Load it with
eval "$(murmur completion bash)" in ~/.bashrc, or install it (`make install`
does): bash in share/bash-completion/completions/murmur, zsh as _murmur in
a directory of $fpath.
]],
  help = [[
usage: murmur help [COMMAND] [--man]

Prints the list of commands, or the help of COMMAND (the same text as
`murmur COMMAND --help`).
  --man              print this whole reference as a man page (troff), e.g.
                     `murmur help --man | man -l -`
]],
  lua = "usage: murmur lua FILE [ARGS]\n\nRuns FILE with murmur.core available; `arg` holds ARGS; its return value (a number) is the exit code.\n",
}

HELP.ddb = require("murmur.ddb").HELP

return HELP
