// lambda_emulator.js: an AWS Lambda execution environment for murmur's tests,
// written from the Runtime API reference (docs.aws.amazon.com/lambda/latest/
// dg/runtimes-api.html, API version 2018-06-01).
//
//   node tests/node/lambda_emulator.js [--port P] [--function NAME]
//        [--handler H] [--task-root DIR] -- CMD [ARG...]
//
// Listens on 127.0.0.1 (port 0 = any free port), starts CMD as the runtime
// with AWS_LAMBDA_RUNTIME_API pointing here (plus the variables Lambda sets:
// AWS_LAMBDA_FUNCTION_NAME, _VERSION, _MEMORY_SIZE, AWS_LAMBDA_LOG_GROUP_NAME,
// AWS_LAMBDA_LOG_STREAM_NAME, and _HANDLER and LAMBDA_TASK_ROOT from
// --handler and --task-root) and
// prints "listening <port>" once the runtime has been started. Like Lambda, it
// starts the runtime again when it exits, and it kills a runtime whose
// invocation outlives its deadline ("Task timed out").
//
// Runtime API (what the runtime calls):
//   GET  /2018-06-01/runtime/invocation/next          waits for an event; answers
//        200 with it and the headers Lambda-Runtime-Aws-Request-Id,
//        -Deadline-Ms, -Invoked-Function-Arn, -Trace-Id
//   POST /2018-06-01/runtime/invocation/{id}/response 202, or 400 for an unknown
//        or already answered id, 413 over 6 MB
//   POST /2018-06-01/runtime/invocation/{id}/error    202 (same checks)
//   POST /2018-06-01/runtime/init/error               202
//
// Test control (what a spec calls, as Lambda's invoke path would):
//   POST /test/invoke?timeout_ms=N   body = the event; answers when the
//        invocation ends: {"request_id","outcome":"response"|"error"|"timeout"|
//        "crash","body","error_type","duration_ms"}, duration_ms the time from
//        handing the event to the runtime to its answer (or the end)
//   POST /test/kill                  SIGKILL the runtime now (it is restarted)
//   GET  /test/state                 {"starts","invocations","init_errors":[...],
//        "ready_ms":[...],"ready_cpu_ms":[...],"ready_wait_ms":[...],
//        "ready_faults":[...]}: per start of the runtime, the milliseconds from
//        its spawn to its first /next (its cold start), and of those the CPU
//        time its threads had and the time they waited for a CPU (Linux's
//        /proc/PID/task/*/schedstat; null elsewhere), and the page faults it
//        took (minflt of /proc/PID/stat, bootstrap's shell included)
//   POST /test/stop                  stop the runtime (SIGTERM) and exit
'use strict'

const http = require('http')
const { spawn } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')

const args = process.argv.slice(2)
const opt = { port: 0, fn: 'murmur-spec', cmd: [], handler: null, root: null }
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') opt.port = Number(args[++i])
  else if (args[i] === '--function') opt.fn = args[++i]
  else if (args[i] === '--handler') opt.handler = args[++i]
  else if (args[i] === '--task-root') opt.root = args[++i]
  else if (args[i] === '--') { opt.cmd = args.slice(i + 1); break }
  else {
    process.stderr.write(`lambda_emulator: unknown argument ${args[i]}\n`)
    process.exit(2)
  }
}
if (opt.cmd.length === 0) {
  process.stderr.write('lambda_emulator: no runtime command after --\n')
  process.exit(2)
}

const PREFIX = '/2018-06-01/runtime'
const MAX_RESPONSE = 6 * 1024 * 1024

let child = null
let stopping = false
const state = { starts: 0, invocations: 0, init_errors: [], kills: 0, ready_ms: [], ready_cpu_ms: [],
  ready_wait_ms: [], ready_faults: [] }
let spawnedAt = null      // when the current runtime was spawned, until its first /next
const queue = []          // invocations waiting for a /next
let waiting = null        // the runtime's pending /next response
let current = null        // the invocation the runtime holds
const answered = new Set()

function log (msg) { process.stderr.write(`lambda_emulator: ${msg}\n`) }

// The CPU time a process's threads have had and the time they waited for a
// CPU, in ms (the first two fields of each thread's schedstat, in ns), or
// nulls where /proc has no schedstat.
function schedstat (pid) {
  try {
    let cpu = 0
    let wait = 0
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      const f = fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')
      cpu += Number(f[0])
      wait += Number(f[1])
    }
    return { cpu: cpu / 1e6, wait: wait / 1e6 }
  } catch (e) {
    return { cpu: null, wait: null }
  }
}

// The minor page faults of a process so far (all its threads): the 10th
// field of /proc/PID/stat, counted after the parenthesised command name.
function minflt (pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[7])
  } catch (e) {
    return null
  }
}

function finish (inv, outcome, body, errorType) {
  if (inv.done) return
  inv.done = true
  clearTimeout(inv.timer)
  answered.add(inv.id)
  if (current === inv) current = null
  const ms = inv.deliveredAt ? Number(process.hrtime.bigint() - inv.deliveredAt) / 1e6 : null
  inv.reply({ request_id: inv.id, outcome, body, error_type: errorType || null, duration_ms: ms })
}

function startRuntime () {
  if (stopping) return
  state.starts++
  const env = Object.assign({}, process.env, {
    AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${server.address().port}`,
    AWS_LAMBDA_FUNCTION_NAME: opt.fn,
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${opt.fn}`,
    AWS_LAMBDA_LOG_STREAM_NAME: `stream-${state.starts}`,
    AWS_REGION: process.env.AWS_REGION || 'us-east-1'
  })
  if (opt.handler) env._HANDLER = opt.handler
  if (opt.root) env.LAMBDA_TASK_ROOT = opt.root
  spawnedAt = process.hrtime.bigint()
  child = spawn(opt.cmd[0], opt.cmd.slice(1), { env, stdio: ['ignore', 'inherit', 'inherit'] })
  const me = child
  me.on('exit', (code, sig) => {
    log(`runtime exited (${sig || code})`)
    if (waiting && waiting.child === me) waiting = null
    if (current) finish(current, 'crash', null, 'Runtime.ExitError')
    if (child === me) child = null
    if (!stopping) setTimeout(startRuntime, 200)
  })
}

function dispatch () {
  if (!waiting || current || queue.length === 0) return
  const inv = queue.shift()
  const res = waiting.res
  waiting = null
  current = inv
  state.invocations++
  inv.deadline = Date.now() + inv.timeoutMs
  // Lambda ends an invocation that outlives its timeout by stopping the
  // runtime, whatever it is doing.
  inv.timer = setTimeout(() => {
    if (inv.done) return
    finish(inv, 'timeout', null, 'Sandbox.Timedout')
    if (child) { state.kills++; child.kill('SIGKILL') }
  }, inv.timeoutMs)
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Aws-Request-Id': inv.id,
    'Lambda-Runtime-Deadline-Ms': String(inv.deadline),
    'Lambda-Runtime-Invoked-Function-Arn': `arn:aws:lambda:us-east-1:123456789012:function:${opt.fn}`,
    'Lambda-Runtime-Trace-Id': `Root=1-${Math.floor(Date.now() / 1000).toString(16)}-${crypto.randomBytes(12).toString('hex')};Parent=${crypto.randomBytes(8).toString('hex')};Sampled=0`
  })
  res.end(inv.event)
  inv.deliveredAt = process.hrtime.bigint()
}

function readBody (req, limit, cb) {
  const chunks = []
  let n = 0
  let over = false
  req.on('data', (c) => { n += c.length; if (n > limit) over = true; else chunks.push(c) })
  req.on('end', () => cb(over, Buffer.concat(chunks)))
}

function json (res, code, obj) {
  res.writeHead(code, { 'Content-Type': 'application/json' })
  res.end(JSON.stringify(obj))
}

function apiError (res, code, type, msg) {
  json(res, code, { errorMessage: msg, errorType: type })
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1')
  const path = url.pathname
  if (req.method === 'GET' && path === `${PREFIX}/invocation/next`) {
    // No time limit: Lambda freezes a runtime that waits here.
    if (spawnedAt !== null && child) {
      state.ready_ms.push(Number(process.hrtime.bigint() - spawnedAt) / 1e6)
      const st = schedstat(child.pid)
      state.ready_cpu_ms.push(st.cpu)
      state.ready_wait_ms.push(st.wait)
      state.ready_faults.push(minflt(child.pid))
      spawnedAt = null
    }
    waiting = { res, child }
    req.on('close', () => { if (waiting && waiting.res === res && !res.writableEnded) waiting = null })
    dispatch()
    return
  }
  let m = path.match(/^\/2018-06-01\/runtime\/invocation\/([^/]+)\/(response|error)$/)
  if (req.method === 'POST' && m) {
    const id = decodeURIComponent(m[1])
    readBody(req, MAX_RESPONSE, (over, body) => {
      if (!current || current.id !== id) {
        return apiError(res, 400, 'InvalidRequestID', answered.has(id)
          ? `invocation ${id} was already answered` : `unknown invocation ${id}`)
      }
      if (over) return apiError(res, 413, 'RequestEntityTooLarge', 'response over 6 MB')
      json(res, 202, { status: 'OK' })
      const text = body.toString('utf8')
      if (m[2] === 'response') finish(current, 'response', text)
      else finish(current, 'error', text, req.headers['lambda-runtime-function-error-type'] || 'Unhandled')
      dispatch()
    })
    return
  }
  if (req.method === 'POST' && path === `${PREFIX}/init/error`) {
    readBody(req, MAX_RESPONSE, (_, body) => {
      state.init_errors.push({ type: req.headers['lambda-runtime-function-error-type'] || null, body: body.toString('utf8') })
      json(res, 202, { status: 'OK' })
    })
    return
  }
  if (req.method === 'POST' && path === '/test/invoke') {
    readBody(req, MAX_RESPONSE, (_, body) => {
      const inv = {
        id: crypto.randomUUID(),
        event: body,
        timeoutMs: Number(url.searchParams.get('timeout_ms') || 30000),
        reply: (obj) => json(res, 200, obj)
      }
      queue.push(inv)
      dispatch()
    })
    return
  }
  if (req.method === 'POST' && path === '/test/kill') {
    if (child) { state.kills++; child.kill('SIGKILL') }
    return json(res, 200, { killed: !!child })
  }
  if (req.method === 'GET' && path === '/test/state') return json(res, 200, state)
  if (req.method === 'POST' && path === '/test/stop') {
    stopping = true
    json(res, 200, { stopping: true })
    if (child) child.kill('SIGTERM')
    setTimeout(() => process.exit(0), child ? 3000 : 10).unref()
    if (child) child.on('exit', () => process.exit(0))
    return
  }
  apiError(res, 404, 'NotFound', `no route ${req.method} ${path}`)
})

server.listen(opt.port, '127.0.0.1', () => {
  startRuntime()
  process.stdout.write(`listening ${server.address().port}\n`)
})

process.on('SIGTERM', () => {
  stopping = true
  if (child) child.kill('SIGTERM')
  setTimeout(() => process.exit(0), 2000).unref()
  if (child) child.on('exit', () => process.exit(0))
  else process.exit(0)
})
