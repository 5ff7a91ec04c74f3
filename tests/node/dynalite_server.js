// dynalite_server.js: starts dynalite (a DynamoDB emulator) for murmur's tests.
//
//   node tests/node/dynalite_server.js [--port P] [--path DIR]
//
// Listens on 127.0.0.1 (port 0 = any free port), creates tables at once
// (createTableMs 0) and prints "listening <port>" on stdout when ready. With
// --path the tables live in LevelDB under DIR and survive a restart, which the
// kill-and-restart spec relies on; without it they are in memory.
'use strict'

const dynalite = require('dynalite')

const args = process.argv.slice(2)
const opt = { port: 0, path: undefined }
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') opt.port = Number(args[++i])
  else if (args[i] === '--path') opt.path = args[++i]
  else {
    process.stderr.write(`dynalite_server: unknown argument ${args[i]}\n`)
    process.exit(2)
  }
}

const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0, path: opt.path })
server.listen(opt.port, '127.0.0.1', (err) => {
  if (err) {
    process.stderr.write(`dynalite_server: ${err.message}\n`)
    process.exit(1)
  }
  process.stdout.write(`listening ${server.address().port}\n`)
})
