// kinesis_lambda_feed.mjs: the Kinesis event source mapping of AWS Lambda,
// for murmur's tests. Puts JSON Lines records into kinesalite with the AWS
// SDK for JavaScript v3, reads them back with GetRecords (so the records,
// their shards and sequence numbers are real), and invokes the function
// through lambda_emulator.js batch by batch, as an event source mapping with
// FunctionResponseTypes=ReportBatchItemFailures does:
//   - a batch holds up to --batch records of one shard, in order;
//   - an answer with batchItemFailures moves the shard's checkpoint to the
//     lowest reported sequence number and retries from there;
//   - an invocation error, a timeout or a crashed runtime retries the whole
//     batch;
//   - with --redeliver P, a fully successful batch is invoked once more with
//     probability P (Lambda delivers at least once), from a seeded generator.
//
//   node tests/node/kinesis_lambda_feed.mjs --emulator PORT --input FILE
//        [--shards N] [--batch N] [--timeout-ms N] [--redeliver P] [--seed N]
//        [--kill-at N] [--stream NAME] [--raw FILE]
//
// --kill-at N kills the runtime (SIGKILL through the emulator) while the
// N-th invocation is in flight. --raw FILE adds its lines as records whose
// data is exactly the line's bytes, not base64 of them (malformed input).
// Prints one JSON line with what happened (durations_ms: each answered
// invocation's time in the runtime, as the emulator measured it).
import http from 'node:http'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import { NodeHttpHandler } from '@smithy/node-http-handler'
import { KinesisClient, CreateStreamCommand, DescribeStreamCommand, PutRecordsCommand,
  GetShardIteratorCommand, GetRecordsCommand } from '@aws-sdk/client-kinesis'

const require = createRequire(import.meta.url)
const kinesalite = require('kinesalite')

const args = process.argv.slice(2)
const opt = { shards: 2, batch: 10, timeoutMs: 10000, redeliver: 0, seed: 1, killAt: 0, stream: 'events' }
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  if (a === '--emulator') opt.emulator = Number(args[++i])
  else if (a === '--input') opt.input = args[++i]
  else if (a === '--shards') opt.shards = Number(args[++i])
  else if (a === '--batch') opt.batch = Number(args[++i])
  else if (a === '--timeout-ms') opt.timeoutMs = Number(args[++i])
  else if (a === '--redeliver') opt.redeliver = Number(args[++i])
  else if (a === '--seed') opt.seed = Number(args[++i])
  else if (a === '--kill-at') opt.killAt = Number(args[++i])
  else if (a === '--stream') opt.stream = args[++i]
  else if (a === '--raw') opt.raw = args[++i]
  else { process.stderr.write(`kinesis_lambda_feed: unknown argument ${a}\n`); process.exit(2) }
}

// A small seeded generator (xorshift32), so a run can be repeated.
let rng = opt.seed >>> 0 || 1
function random () {
  rng ^= rng << 13; rng >>>= 0
  rng ^= rng >>> 17
  rng ^= rng << 5; rng >>>= 0
  return rng / 4294967296
}

function post (path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: opt.emulator, path, method: 'POST' }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))))
    })
    req.on('error', reject)
    req.end(body)
  })
}

const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 })
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const client = new KinesisClient({
  endpoint: `http://127.0.0.1:${server.address().port}`,
  region: 'us-east-1',
  // kinesalite speaks HTTP/1.1; the Kinesis client defaults to HTTP/2.
  requestHandler: new NodeHttpHandler(),
  credentials: { accessKeyId: 'AKIDFEED', secretAccessKey: 'feed-secret' }
})

await client.send(new CreateStreamCommand({ StreamName: opt.stream, ShardCount: opt.shards }))
let desc
for (;;) {
  desc = (await client.send(new DescribeStreamCommand({ StreamName: opt.stream }))).StreamDescription
  if (desc.StreamStatus === 'ACTIVE') break
  await new Promise((resolve) => setTimeout(resolve, 20))
}

const lines = fs.readFileSync(opt.input, 'utf8').split('\n').filter((l) => l.length > 0)
const raw = opt.raw ? fs.readFileSync(opt.raw, 'utf8').split('\n').filter((l) => l.length > 0) : []
const rawData = new Set()
const entries = lines.map((l, i) => ({ Data: Buffer.from(l), PartitionKey: `k${i % 17}` }))
raw.forEach((l, i) => { const d = Buffer.from(`raw-${i}:${l}`); rawData.add(d.toString()); entries.push({ Data: d, PartitionKey: `r${i}` }) })
for (let i = 0; i < entries.length; i += 500) {
  const out = await client.send(new PutRecordsCommand({ StreamName: opt.stream, Records: entries.slice(i, i + 500) }))
  if (out.FailedRecordCount) throw new Error(`PutRecords: ${out.FailedRecordCount} records failed`)
}

// Every shard read back to its end with GetRecords.
const shards = []
for (const s of desc.Shards) {
  let it = (await client.send(new GetShardIteratorCommand({
    StreamName: opt.stream, ShardId: s.ShardId, ShardIteratorType: 'TRIM_HORIZON'
  }))).ShardIterator
  const recs = []
  for (;;) {
    const out = await client.send(new GetRecordsCommand({ ShardIterator: it, Limit: 1000 }))
    recs.push(...out.Records)
    if (out.Records.length === 0 || !out.NextShardIterator) break
    it = out.NextShardIterator
  }
  shards.push({ id: s.ShardId, recs })
}

const arn = `arn:aws:kinesis:us-east-1:000000000000:stream/${opt.stream}`
function event (shard, recs) {
  return JSON.stringify({
    Records: recs.map((r) => {
      const text = Buffer.from(r.Data).toString()
      return {
        kinesis: {
          kinesisSchemaVersion: '1.0',
          partitionKey: r.PartitionKey,
          sequenceNumber: r.SequenceNumber,
          // Malformed input: the bytes as they are, not their base64.
          data: rawData.has(text) ? text.replace(/^raw-\d+:/, '') : Buffer.from(r.Data).toString('base64'),
          approximateArrivalTimestamp: r.ApproximateArrivalTimestamp.getTime() / 1000
        },
        eventSource: 'aws:kinesis',
        eventVersion: '1.0',
        eventID: `${shard.id}:${r.SequenceNumber}`,
        eventName: 'aws:kinesis:record',
        invokeIdentityArn: 'arn:aws:iam::000000000000:role/murmur-spec',
        awsRegion: 'us-east-1',
        eventSourceARN: arn
      }
    })
  })
}

const stats = { records: entries.length, invocations: 0, responses: 0, failures_reported: 0, partial: 0,
  errors: 0, timeouts: 0, crashes: 0, redelivered: 0, kills: 0, durations_ms: [] }
let pendingKill = opt.killAt

async function invoke (shard, recs) {
  stats.invocations++
  const p = post(`/test/invoke?timeout_ms=${opt.timeoutMs}`, event(shard, recs))
  if (pendingKill && stats.invocations === pendingKill) {
    pendingKill = 0
    await new Promise((resolve) => setTimeout(resolve, 5))
    await post('/test/kill', '')
    stats.kills++
  }
  return p
}

// The shards are served one after the other, each in order (Lambda runs one
// batch per shard at a time).
for (const shard of shards) {
  let at = 0
  let attempts = 0
  while (at < shard.recs.length) {
    if (++attempts > 200) throw new Error(`shard ${shard.id}: 200 invocations without progress`)
    const recs = shard.recs.slice(at, at + opt.batch)
    const r = await invoke(shard, recs)
    if (r.outcome === 'timeout') { stats.timeouts++; continue }
    if (r.outcome === 'crash') { stats.crashes++; continue }
    if (r.outcome === 'error') { stats.errors++; continue }
    stats.responses++
    if (r.duration_ms != null) stats.durations_ms.push(r.duration_ms)
    const failures = (JSON.parse(r.body || '{}') || {}).batchItemFailures || []
    if (failures.length > 0) {
      stats.partial++
      stats.failures_reported += failures.length
      // Lambda checkpoints before the lowest reported sequence number.
      const lowest = failures.map((f) => f.itemIdentifier).sort((a, b) =>
        a.length - b.length || (a < b ? -1 : a > b ? 1 : 0))[0]
      const idx = recs.findIndex((x) => x.SequenceNumber === lowest)
      if (idx < 0) throw new Error(`itemIdentifier ${lowest} is not in the batch`)
      at += idx
      continue
    }
    if (opt.redeliver > 0 && random() < opt.redeliver) {
      stats.redelivered++
      continue
    }
    at += recs.length
    attempts = 0
  }
}

process.stdout.write(JSON.stringify(stats) + '\n')
server.close()
process.exit(0)
