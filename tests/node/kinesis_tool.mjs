// kinesis_tool.mjs: drives a Kinesis endpoint (kinesalite in the specs) with
// AWS's own SDK (@aws-sdk/client-kinesis), so that the streams, records and
// sequence numbers murmur reads are made by an independent client.
//
//   node tests/node/kinesis_tool.mjs --endpoint URL create STREAM SHARDS
//   node tests/node/kinesis_tool.mjs --endpoint URL put STREAM FILE
//        (one record per line of FILE; its partition key is the line's
//        "key" field; prints "put N")
//   node tests/node/kinesis_tool.mjs --endpoint URL split STREAM SHARD
//        (splits SHARD at the middle of its hash key range)
//   node tests/node/kinesis_tool.mjs --endpoint URL merge STREAM SHARD ADJACENT
//   node tests/node/kinesis_tool.mjs --endpoint URL shards STREAM
//        (prints the ListShards answer's Shards as JSON)
//   node tests/node/kinesis_tool.mjs --endpoint URL read STREAM
//        (reads every shard from TRIM_HORIZON with back-to-back GetRecords
//        of up to 10 000 records until it is caught up, unpaced; prints
//        {"records":N,"bytes":B,"calls":C,"seconds":S}, S the time of the
//        GetRecords loops: the emulator's own read ceiling, for make bench)
//
// Every command that changes the stream waits until it is ACTIVE again.
import { readFileSync } from 'node:fs'
import {
  KinesisClient, CreateStreamCommand, DescribeStreamSummaryCommand, PutRecordsCommand,
  SplitShardCommand, MergeShardsCommand, ListShardsCommand, GetShardIteratorCommand,
  GetRecordsCommand,
} from '@aws-sdk/client-kinesis'
import { NodeHttpHandler } from '@smithy/node-http-handler'

const argv = process.argv.slice(2)
let endpoint
while (argv[0] && argv[0].startsWith('--')) {
  const flag = argv.shift()
  if (flag === '--endpoint') endpoint = argv.shift()
  else throw new Error(`unknown flag ${flag}`)
}
const [cmd, stream, ...rest] = argv
// The SDK speaks HTTP/2 to Kinesis by default; kinesalite (like murmur's
// client) speaks HTTP/1.1.
const client = new KinesisClient({
  endpoint, region: 'us-east-1', requestHandler: new NodeHttpHandler(),
  credentials: { accessKeyId: 'AKIDSPEC', secretAccessKey: 'spec-secret' },
})

async function waitActive () {
  for (let i = 0; i < 400; i++) {
    const s = await client.send(new DescribeStreamSummaryCommand({ StreamName: stream }))
    if (s.StreamDescriptionSummary.StreamStatus === 'ACTIVE') return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`stream ${stream} did not become ACTIVE`)
}

async function shards () {
  const out = []
  let token
  do {
    const r = await client.send(new ListShardsCommand(token ? { NextToken: token } : { StreamName: stream }))
    out.push(...r.Shards)
    token = r.NextToken
  } while (token)
  return out
}

async function put (file) {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0)
  let n = 0
  for (let i = 0; i < lines.length; i += 500) {
    let batch = lines.slice(i, i + 500).map((l) => ({
      Data: Buffer.from(l), PartitionKey: String(JSON.parse(l).key ?? i),
    }))
    // Records the stream refuses (throttling) are sent again, in order.
    while (batch.length > 0) {
      const r = await client.send(new PutRecordsCommand({ StreamName: stream, Records: batch }))
      const again = []
      r.Records.forEach((rec, k) => { if (rec.ErrorCode) again.push(batch[k]); else n++ })
      batch = again
    }
  }
  console.log(`put ${n}`)
}

// One shard's records, back to back: an empty answer with MillisBehindLatest
// 0, or the shard's end, stops it.
async function readShard (shardId, total) {
  let it = (await client.send(new GetShardIteratorCommand({
    StreamName: stream, ShardId: shardId, ShardIteratorType: 'TRIM_HORIZON',
  }))).ShardIterator
  while (it) {
    const r = await client.send(new GetRecordsCommand({ ShardIterator: it, Limit: 10000 }))
    total.calls++
    total.records += r.Records.length
    for (const rec of r.Records) total.bytes += rec.Data.length
    if (r.Records.length === 0 && r.MillisBehindLatest === 0) break
    it = r.NextShardIterator
  }
}

if (cmd === 'create') {
  await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: Number(rest[0]) }))
  await waitActive()
} else if (cmd === 'put') {
  await put(rest[0])
} else if (cmd === 'split') {
  const s = (await shards()).find((x) => x.ShardId === rest[0])
  const lo = BigInt(s.HashKeyRange.StartingHashKey)
  const hi = BigInt(s.HashKeyRange.EndingHashKey)
  await client.send(new SplitShardCommand({
    StreamName: stream, ShardToSplit: rest[0], NewStartingHashKey: String((lo + hi) / 2n),
  }))
  await waitActive()
} else if (cmd === 'merge') {
  await client.send(new MergeShardsCommand({
    StreamName: stream, ShardToMerge: rest[0], AdjacentShardToMerge: rest[1],
  }))
  await waitActive()
} else if (cmd === 'shards') {
  console.log(JSON.stringify(await shards()))
} else if (cmd === 'read') {
  const list = await shards()
  const total = { records: 0, bytes: 0, calls: 0, seconds: 0 }
  const t0 = process.hrtime.bigint()
  for (const s of list) await readShard(s.ShardId, total)
  total.seconds = Number(process.hrtime.bigint() - t0) / 1e9
  console.log(JSON.stringify(total))
} else {
  throw new Error(`unknown command ${cmd}`)
}
