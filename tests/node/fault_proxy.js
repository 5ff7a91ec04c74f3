// fault_proxy.js: a fault-injecting HTTP proxy in front of dynalite (or
// kinesalite), for the DynamoDB and Kinesis specs and benchmark.
//
//   node tests/node/fault_proxy.js --target PORT [--port P] [--seed N]
//
// Listens on 127.0.0.1 (port 0 = any free port), prints "listening <port>"
// when ready and forwards every DynamoDB request to 127.0.0.1:TARGET over
// keep-alive connections, except when a fault rule matches. Control endpoints
// on the same port (JSON):
//
//   POST /__faults   {"rules":[RULE...], "verify_secret":S, "require_token":T}
//                    replaces the rules (and resets their counters)
//   GET  /__stats    {"requests":{"UpdateItem":N,...},"injected":{"throttle":N,...},
//                     "signatures_checked":N}
//   POST /__creds    {"AccessKeyId":..,"SecretAccessKey":..,"Token":..,"Expiration":..,
//                     "auth":"expected Authorization header",
//                     "fail":N, "delay_ms":D}
//   GET  /creds      the credentials above: a container credentials endpoint
//                    (the first N requests get a 500, every answer waits D ms)
//   POST /__release  forwards every request a hold rule is holding (with
//                    {"match":S}, only those whose body contains S)
//
// A RULE is {"op":"UpdateItem"|"*", "action":A, "after":M, "count":N, "rate":R,
// "keep":K, "match":S}: a request matches when its operation is op and, with
// match, its body contains the text S (e.g. "ADD #v": the sums' merges, not
// the other UpdateItems). Past the first M matching requests (after), it applies to the
// next N (count), or to each with probability R (rate, from a seeded
// generator), or to all when neither is given. Actions:
//   throttle       400 ProvisionedThroughputExceededException
//   throttling     400 ThrottlingException
//   expired_iterator  400 ExpiredIteratorException (Kinesis GetRecords)
//   error500       500 InternalServerError (JSON)
//   error503       503 with a plain-text body
//   drop_response  forward the request, let dynalite apply it, then close the
//                  client connection without answering: a lost response
//   unprocessed    BatchGetItem: forward only the first K keys and return the
//                  rest as UnprocessedKeys
//   hold           keep the request unanswered until POST /__release, then
//                  forward it (a DynamoDB that answers only when told to)
//
// With verify_secret every request's SigV4 signature is recomputed here from
// the bytes received (method, path, signed headers, body) and a mismatch is
// answered 400 InvalidSignatureException, so the specs prove that what curl
// sends is what our signer signed. require_token also demands that
// X-Amz-Security-Token equals T.
'use strict'

const http = require('http')
const crypto = require('crypto')

const args = process.argv.slice(2)
const opt = { port: 0, target: 0, seed: 1 }
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  if (a === '--port') opt.port = Number(args[++i])
  else if (a === '--target') opt.target = Number(args[++i])
  else if (a === '--seed') opt.seed = Number(args[++i])
  else {
    process.stderr.write(`fault_proxy: unknown argument ${a}\n`)
    process.exit(2)
  }
}
if (!opt.target) {
  process.stderr.write('fault_proxy: --target PORT is required\n')
  process.exit(2)
}

// A small seeded generator (xorshift32), so fault patterns repeat across runs.
let rng = (opt.seed >>> 0) || 1
function random () {
  rng ^= rng << 13; rng >>>= 0
  rng ^= rng >>> 17
  rng ^= rng << 5; rng >>>= 0
  return rng / 4294967296
}

let rules = []
let verifySecret = null
let requireToken = null
let creds = null
// Requests a hold rule keeps, each a function that forwards it.
const held = []
const stats = { requests: {}, injected: {}, signatures_checked: 0, forwarded: 0 }
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })

function count (table, key) { table[key] = (table[key] || 0) + 1 }

function awsError (res, status, type, message) {
  const body = JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${type}`, message })
  res.writeHead(status, { 'Content-Type': 'application/x-amz-json-1.0', 'Content-Length': Buffer.byteLength(body) })
  res.end(body)
}

function pickRule (op, body) {
  for (const r of rules) {
    if (r.op !== '*' && r.op !== op) continue
    if (r.match !== undefined && !body.includes(r.match)) continue
    if (r.after > 0) { r.after--; continue }
    if (r.count !== undefined) {
      if (r.count > 0) { r.count--; return r }
      continue
    }
    if (r.rate !== undefined) {
      if (random() < r.rate) return r
      continue
    }
    return r
  }
  return null
}

function sha256 (data) { return crypto.createHash('sha256').update(data).digest('hex') }
function hmac (key, data) { return crypto.createHmac('sha256', key).update(data).digest() }

// Recomputes the SigV4 signature of a request as received; returns null when
// it matches, else the reason.
function checkSignature (req, body) {
  const auth = req.headers.authorization || ''
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth)
  if (!m) return `malformed Authorization: ${auth}`
  const [, , date, region, service, signedHeaders, signature] = m
  const amzDate = req.headers['x-amz-date'] || ''
  if (amzDate.slice(0, 8) !== date) return 'X-Amz-Date does not match the credential scope'
  const names = signedHeaders.split(';')
  for (const need of ['host', 'x-amz-date']) {
    if (!names.includes(need)) return `${need} is not signed`
  }
  if (req.headers['x-amz-security-token'] && !names.includes('x-amz-security-token')) {
    return 'the session token is not signed'
  }
  const canonHeaders = names.map((n) => {
    const v = req.headers[n]
    if (v === undefined) return null
    return `${n}:${String(v).trim().replace(/\s+/g, ' ')}\n`
  })
  if (canonHeaders.includes(null)) return 'a signed header is missing'
  const url = new URL(req.url, 'http://x')
  const canonical = [req.method, url.pathname, '', canonHeaders.join(''), signedHeaders, sha256(body)].join('\n')
  const scope = `${date}/${region}/${service}/aws4_request`
  const sts = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n')
  let k = hmac('AWS4' + verifySecret, date)
  k = hmac(k, region)
  k = hmac(k, service)
  k = hmac(k, 'aws4_request')
  const expect = hmac(k, sts).toString('hex')
  return expect === signature ? null : 'signature mismatch'
}

function forward (req, body, res, onAnswer) {
  const headers = Object.assign({}, req.headers)
  headers['content-length'] = Buffer.byteLength(body)
  const up = http.request({ host: '127.0.0.1', port: opt.target, method: req.method, path: req.url, headers, agent }, (ur) => {
    const chunks = []
    ur.on('data', (c) => chunks.push(c))
    ur.on('end', () => onAnswer(ur.statusCode, ur.headers, Buffer.concat(chunks)))
  })
  up.on('error', (e) => {
    // dynalite is down: close the client connection, like a dead endpoint.
    res.socket && res.socket.destroy()
  })
  up.end(body)
  stats.forwarded++
}

function reply (res, status, headers, body) {
  const h = Object.assign({}, headers)
  delete h['transfer-encoding']
  h['content-length'] = Buffer.byteLength(body)
  res.writeHead(status, h)
  res.end(body)
}

function handleControl (req, body, res) {
  const json = (obj) => {
    const b = JSON.stringify(obj)
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) })
    res.end(b)
  }
  if (req.url === '/__faults' && req.method === 'POST') {
    let cfg
    try {
      cfg = JSON.parse(body.toString() || '{}')
    } catch (e) {
      res.writeHead(400, { 'Content-Length': 0 })
      return res.end()
    }
    // An empty Lua table arrives as {}: no rules.
    rules = (Array.isArray(cfg.rules) ? cfg.rules : []).map((r) => Object.assign({ op: '*' }, r))
    verifySecret = cfg.verify_secret || null
    requireToken = cfg.require_token || null
    return json({ ok: true })
  }
  if (req.url === '/__stats') return json(stats)
  if (req.url === '/__release' && req.method === 'POST') {
    const match = body.length ? JSON.parse(body.toString()).match : undefined
    const go = []
    for (let i = 0; i < held.length;) {
      if (match === undefined || held[i].body.includes(match)) go.push(held.splice(i, 1)[0])
      else i++
    }
    for (const h of go) h.go()
    return json({ released: go.length })
  }
  if (req.url === '/__creds' && req.method === 'POST') {
    creds = JSON.parse(body.toString())
    return json({ ok: true })
  }
  if (req.url === '/creds') {
    if (!creds || (creds.auth && req.headers.authorization !== creds.auth)) {
      res.writeHead(401, { 'Content-Length': 0 })
      return res.end()
    }
    count(stats.requests, 'creds')
    const c = Object.assign({}, creds)
    for (const k of ['auth', 'fail', 'delay_ms']) delete c[k]
    const failing = creds.fail > 0
    if (failing) creds.fail--
    setTimeout(() => {
      if (!failing) return json(c)
      res.writeHead(500, { 'Content-Length': 0 })
      res.end()
    }, creds.delay_ms || 0)
    return
  }
  res.writeHead(404, { 'Content-Length': 0 })
  res.end()
}

const server = http.createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    if (req.url.startsWith('/__') || req.url === '/creds') return handleControl(req, body, res)
    const target = String(req.headers['x-amz-target'] || '')
    const op = target.split('.').pop()
    count(stats.requests, op)
    if (verifySecret) {
      stats.signatures_checked++
      const why = checkSignature(req, body)
      if (why) return awsError(res, 400, 'InvalidSignatureException', why)
    }
    if (requireToken && req.headers['x-amz-security-token'] !== requireToken) {
      return awsError(res, 400, 'UnrecognizedClientException', 'bad or missing security token')
    }
    const rule = pickRule(op, body.toString())
    const action = rule ? rule.action : 'forward'
    if (rule) count(stats.injected, action)
    switch (action) {
      case 'throttle':
        return awsError(res, 400, 'ProvisionedThroughputExceededException', 'injected by fault_proxy')
      case 'throttling':
        return awsError(res, 400, 'ThrottlingException', 'injected by fault_proxy')
      case 'expired_iterator':
        return awsError(res, 400, 'ExpiredIteratorException', 'injected by fault_proxy')
      case 'error500':
        return awsError(res, 500, 'InternalServerError', 'injected by fault_proxy')
      case 'error503':
        res.writeHead(503, { 'Content-Type': 'text/plain', 'Content-Length': 19 })
        return res.end('Service Unavailable')
      case 'hold':
        held.push({ body, go: () => forward(req, body, res, (status, headers, answer) => reply(res, status, headers, answer)) })
        return
      case 'drop_response':
        return forward(req, body, res, () => res.socket.destroy())
      case 'unprocessed': {
        if (op !== 'BatchGetItem') break
        const doc = JSON.parse(body.toString())
        const table = Object.keys(doc.RequestItems)[0]
        const keys = doc.RequestItems[table].Keys
        const keep = rule.keep || 1
        if (keys.length <= keep) break
        doc.RequestItems[table].Keys = keys.slice(0, keep)
        const rest = keys.slice(keep)
        // The body changes, so the signature is checked above, not by dynalite.
        return forward(req, Buffer.from(JSON.stringify(doc)), res, (status, headers, answer) => {
          if (status !== 200) return reply(res, status, headers, answer)
          const out = JSON.parse(answer.toString())
          out.UnprocessedKeys = { [table]: Object.assign({}, doc.RequestItems[table], { Keys: rest }) }
          reply(res, status, headers, JSON.stringify(out))
        })
      }
    }
    forward(req, body, res, (status, headers, answer) => reply(res, status, headers, answer))
  })
})
server.keepAliveTimeout = 60000
server.listen(opt.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})
