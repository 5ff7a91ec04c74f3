// kinesalite_server.js: starts kinesalite (a Kinesis emulator) for murmur's
// tests.
//
//   node tests/node/kinesalite_server.js [--port P] [--path DIR]
//
// Listens on 127.0.0.1 (port 0 = any free port) and prints "listening <port>"
// on stdout when ready. Creating, deleting and resharding a stream take 50 ms
// instead of kinesalite's default 500 ms, so specs that split and merge shards
// do not wait. With --path the streams live in LevelDB under DIR; without it
// they are in memory.
'use strict'

const kinesalite = require('kinesalite')

const args = process.argv.slice(2)
const opt = { port: 0, path: undefined }
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') opt.port = Number(args[++i])
  else if (args[i] === '--path') opt.path = args[++i]
  else {
    process.stderr.write(`kinesalite_server: unknown argument ${args[i]}\n`)
    process.exit(2)
  }
}

const server = kinesalite({ createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50,
  shardLimit: 50, path: opt.path })
server.listen(opt.port, '127.0.0.1', (err) => {
  if (err) {
    process.stderr.write(`kinesalite_server: ${err.message}\n`)
    process.exit(1)
  }
  process.stdout.write(`listening ${server.address().port}\n`)
})
