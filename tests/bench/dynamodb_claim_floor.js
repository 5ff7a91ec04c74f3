// dynamodb_claim_floor.js: what grouping dedup claims into shared items would
// cost on DynamoDB, measured on dynalite (make bench; doc/dynamodb.md, "The
// floor of dedup requests"). This is a measurement of request shapes, not of
// murmur: murmur claims one id per conditional PutItem today, and this script
// puts that shape next to the grouped one that would replace it, so that the
// figures the design rests on are reproducible.
//
//   node tests/bench/dynamodb_claim_floor.js [IDS] [FLUSHES]
//
// For IDS new ids (default 20 000) claimed in FLUSHES flushes (default 10),
// 32 requests in flight as murmur's max_inflight, it prints per shape the
// requests per id, the write units per id that dynalite charges (it bills an
// UpdateItem by the larger of the item before and after, as DynamoDB does),
// the largest claim item and the ids per second. Then it races two writers
// over the same ids in different orders with the grouped shape and checks
// that every id is won by exactly one of them (PASS/MISS).
'use strict'

const path = require('path')
const http = require('http')
const dynalite = require(path.join(__dirname, '../node/node_modules/dynalite'))

const IDS = Number(process.argv[2] || 20000)
const FLUSHES = Number(process.argv[3] || 10)
const INFLIGHT = 32
// Each case gets a fresh table (deleting one is asynchronous in dynalite).
let TABLE = 'claim_floor'
let tables = 0
// DynamoDB's limit on the length of an expression string, counted on the
// raw string (placeholders, not the names they stand for).
const EXPR_MAX = 4096
// Each id costs two operators/functions (= and if_not_exists) of the 300 an
// UpdateExpression may hold; 100 ids leave room.
const GROUP_MAX = 100

const agent = new http.Agent({ keepAlive: true, maxSockets: INFLIGHT })
let port = 0

// One DynamoDB call; dynalite does not check signatures, so a well-formed
// but fake Authorization header is enough.
function call (target, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body)
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/',
      agent,
      headers: {
        'Content-Type': 'application/x-amz-json-1.0',
        'X-Amz-Target': 'DynamoDB_20120810.' + target,
        Authorization: 'AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/dynamodb/aws4_request, ' +
          'SignedHeaders=host, Signature=0',
        'X-Amz-Date': '20260101T000000Z',
        'Content-Length': Buffer.byteLength(data)
      }
    }, (res) => {
      let s = ''
      res.on('data', (c) => { s += c })
      res.on('end', () => resolve({ status: res.statusCode, body: s ? JSON.parse(s) : {} }))
    })
    req.on('error', reject)
    req.end(data)
  })
}

// Runs the request bodies through call() with INFLIGHT in flight; returns
// the answers in order. A non-200 answer other than a failed condition
// aborts the measurement: it would mean the shape is not valid.
async function runAll (target, bodies) {
  const out = new Array(bodies.length)
  let next = 0
  async function worker () {
    while (next < bodies.length) {
      const i = next++
      const r = await call(target, bodies[i])
      if (r.status !== 200 && !/ConditionalCheckFailed/.test(r.body.__type || '')) {
        throw new Error(`${target}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`)
      }
      out[i] = r
    }
  }
  await Promise.all(Array.from({ length: INFLIGHT }, worker))
  return out
}

function fnv1a (s) {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

// The value a claim stores: owner, the tag of the flush that will commit
// it, and the claim's lease end, as murmur's claim items hold them today.
function claimValue (owner, flush) {
  return `${owner}|${owner}w#${flush}|${Date.now() + 30000}`
}

// Today's shape: one conditional PutItem per id.
function perIdBodies (ns, ids, owner, flush) {
  return ids.map((id) => ({
    TableName: TABLE,
    Item: {
      pk: { S: `${ns}#${id}` },
      st: { S: 'P' },
      own: { S: owner },
      fl: { S: `${owner}w#${flush}` },
      ls: { N: String(Date.now() + 30000) },
      ttl: { N: String(Math.floor(Date.now() / 1000) + 2 * 86400) }
    },
    ConditionExpression: 'attribute_not_exists(pk)',
    ReturnValues: 'ALL_OLD',
    ReturnConsumedCapacity: 'TOTAL'
  }))
}

// The grouped shape: ids hashed into `buckets` items; per item, one
// UpdateItem per run of ids that fits the expression limit, each id a
// top-level attribute set only if absent, returning the values now stored.
function groupedBodies (ns, ids, owner, flush, buckets) {
  const per = new Map()
  for (const id of ids) {
    const b = fnv1a(id) % buckets
    if (!per.has(b)) per.set(b, [])
    per.get(b).push(id)
  }
  const bodies = []
  const value = claimValue(owner, flush)
  for (const [b, list] of per) {
    let k = 0
    while (k < list.length) {
      const names = {}
      const sets = []
      let len = 4
      for (let n = 0; k < list.length && n < GROUP_MAX; n++, k++) {
        const set = `#i${n} = if_not_exists(#i${n}, :v)`
        if (len + set.length + 2 > EXPR_MAX) break
        len += set.length + 2
        names[`#i${n}`] = `c_${list[k]}`
        sets.push(set)
      }
      bodies.push({
        TableName: TABLE,
        Key: { pk: { S: `#claims#${ns}#${b}` } },
        UpdateExpression: 'SET ' + sets.join(', '),
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: { ':v': { S: value } },
        ReturnValues: 'UPDATED_NEW',
        ReturnConsumedCapacity: 'TOTAL'
      })
    }
  }
  return bodies
}

function itemBytes (attrs) {
  let n = 0
  for (const [k, v] of Object.entries(attrs || {})) n += k.length + (v.S || v.N || '').length
  return n
}

async function measure (label, target, make) {
  const ids = Array.from({ length: IDS }, (_, i) => `e${i}`)
  const per = Math.ceil(IDS / FLUSHES)
  let requests = 0; let units = 0; let won = 0; let largest = 0
  const t0 = process.hrtime.bigint()
  for (let f = 0; f < FLUSHES; f++) {
    const bodies = make(ids.slice(f * per, (f + 1) * per), f)
    const answers = await runAll(target, bodies)
    requests += bodies.length
    for (const a of answers) {
      units += (a.body.ConsumedCapacity || {}).CapacityUnits || 0
      if (target === 'PutItem') won += a.status === 200 ? 1 : 0
      else won += Object.keys(a.body.Attributes || {}).length
    }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  if (target === 'UpdateItem') {
    // The largest claim item, read back once: its size bounds the write
    // units every later claim in it is billed.
    const got = await runAll('Scan', [{ TableName: TABLE }])
    for (const it of got[0].body.Items || []) largest = Math.max(largest, itemBytes(it))
  } else {
    largest = itemBytes(make([ 'e0' ], 0)[0].Item)
  }
  console.log(`${label.padEnd(44)} ${(requests / IDS).toFixed(4)} requests/id  ` +
    `${(units / IDS).toFixed(3)} write units/id  largest item ${largest} B  ` +
    `${Math.round(IDS / secs)} ids/s  (${requests} requests, ${won} of ${IDS} won)`)
}

// Two writers claim the same ids, each in its own order, at the same time,
// with the grouped shape: an id is won by a writer when the value the
// answer returns for it is the writer's own.
async function race (buckets) {
  const ids = Array.from({ length: Math.min(IDS, 4000) }, (_, i) => `r${i}`)
  const shuffled = ids.slice().sort((a, b) => fnv1a(a + 'x') - fnv1a(b + 'x'))
  const wins = new Map()
  async function writer (owner, order) {
    const bodies = groupedBodies('race', order, owner, 0, buckets)
    const answers = await runAll('UpdateItem', bodies)
    const mine = claimValue(owner, 0).split('|').slice(0, 2).join('|')
    for (const a of answers) {
      for (const [name, v] of Object.entries(a.body.Attributes || {})) {
        if (v.S.startsWith(mine + '|')) wins.set(name, (wins.get(name) || 0) + 1)
      }
    }
  }
  await Promise.all([writer('A', ids), writer('B', shuffled)])
  let exact = 0
  for (const id of ids) exact += wins.get(`c_${id}`) === 1 ? 1 : 0
  console.log(`${exact === ids.length ? 'PASS' : 'MISS'}  two writers, ${ids.length} shared ids, ` +
    `grouped claims: ${exact} ids won by exactly one writer`)
}

async function main () {
  const server = dynalite({ createTableMs: 0 })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  port = server.address().port
  const table = async () => {
    TABLE = `claim_floor_${++tables}`
    const r = await call('CreateTable', {
      TableName: TABLE,
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST'
    })
    if (r.status !== 200) throw new Error('CreateTable: ' + JSON.stringify(r.body))
  }
  console.log(`claim floor: ${IDS} new ids in ${FLUSHES} flushes, ${INFLIGHT} requests in flight, dynalite in memory`)
  await table()
  await measure('one conditional PutItem per id (today)', 'PutItem', (ids, f) => perIdBodies('ns', ids, 'me', f))
  for (const buckets of [4, 16, 64]) {
    await table()
    await measure(`grouped UpdateItem, ${buckets} claim items`, 'UpdateItem',
      (ids, f) => groupedBodies('ns', ids, 'me', f, buckets))
  }
  await table()
  await race(16)
  agent.destroy()
  server.close()
}

main().catch((e) => {
  console.error(`claim floor: ${e.message}`)
  process.exit(1)
})
