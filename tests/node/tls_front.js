// tls_front.js: a TLS endpoint in front of a plain TCP service on 127.0.0.1,
// for the spec that checks murmur verifies HTTPS servers against the CA
// certificates SSL_CERT_FILE names (tests/spec/lambda_zip_spec.lua).
//
//   node tests/node/tls_front.js --cert CERT.pem --key KEY.pem --target PORT
//
// Listens on 127.0.0.1 at any free port, prints "listening <port>" when
// ready, and pipes the bytes of every TLS connection to 127.0.0.1:TARGET and
// back unchanged.
'use strict'

const fs = require('fs')
const net = require('net')
const tls = require('tls')

const args = process.argv.slice(2)
const opt = {}
for (let i = 0; i < args.length; i += 2) {
  const name = args[i].replace(/^--/, '')
  if (!['cert', 'key', 'target'].includes(name) || args[i + 1] === undefined) {
    process.stderr.write(`tls_front: bad argument ${args[i]}\n`)
    process.exit(2)
  }
  opt[name] = args[i + 1]
}
if (!opt.cert || !opt.key || !opt.target) {
  process.stderr.write('usage: tls_front.js --cert CERT.pem --key KEY.pem --target PORT\n')
  process.exit(2)
}

const server = tls.createServer({ cert: fs.readFileSync(opt.cert), key: fs.readFileSync(opt.key) }, (client) => {
  const up = net.connect(Number(opt.target), '127.0.0.1')
  client.pipe(up)
  up.pipe(client)
  client.on('error', () => up.destroy())
  up.on('error', () => client.destroy())
})
// A client that rejects the certificate aborts the handshake: not our error.
server.on('tlsClientError', () => {})
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`)
})
