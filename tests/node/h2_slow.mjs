// Slow HTTP/2 clients, for the hostile HTTP spec, with Node's own HTTP/2
// client (node:http2).
//
//   node h2_slow.mjs PORT trickle   one stream fed a body byte every 150 ms
//                                   while other streams on the same
//                                   connection make complete Get calls
//   node h2_slow.mjs PORT control   a connection that opens no stream and
//                                   sends only PINGs and WINDOW_UPDATEs
//
// Gives up after 8 s and prints one JSON object: for trickle, the slow
// stream's RST_STREAM code (null if the server never reset it) and how many
// complete calls were answered before and after that reset; for control,
// whether the server closed the connection.
import { connect } from "node:http2";

const [port, mode] = process.argv.slice(2);
const url = `http://127.0.0.1:${port}`;
const GET = { ":method": "POST", ":path": "/murmur.v1.QueryService/Get", "content-type": "application/json" };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = Date.now() + 8000;
const session = connect(url);
let sessionClosed = false;
session.on("close", () => { sessionClosed = true; });
session.on("error", () => {});

function call() {
  return new Promise((resolve) => {
    const s = session.request(GET);
    let body = "";
    s.setEncoding("utf8");
    s.on("response", () => {});
    s.on("data", (d) => { body += d; });
    s.on("error", () => resolve(false));
    s.on("close", () => resolve(body.includes('"found":true')));
    s.end('{"pipeline":"views","entity":"p1"}');
  });
}

async function trickle() {
  const slow = session.request(GET);
  let reset = null;
  slow.on("error", () => {});
  slow.on("close", () => { reset = slow.rstCode; });
  const body = Buffer.from('{"pipeline":"views","entity":"p1"}');
  let i = 0, before = 0, after = 0;
  while (Date.now() < deadline && !sessionClosed) {
    if (reset === null && i < body.length) slow.write(body.subarray(i, ++i));
    const ok = await call();
    if (ok && reset === null) before++;
    else if (ok) after++;
    if (reset !== null && after >= 2) break;
    await sleep(150);
  }
  return { reset, before, after, session_closed: sessionClosed };
}

async function control() {
  let window = 65535;
  while (Date.now() < deadline && !sessionClosed) {
    if (!session.destroyed) {
      session.ping(() => {});
      window += 1;
      session.setLocalWindowSize(window);
    }
    await sleep(150);
  }
  return { session_closed: sessionClosed };
}

session.on("connect", async () => {
  const out = mode === "trickle" ? await trickle() : await control();
  process.stdout.write(JSON.stringify(out) + "\n");
  session.destroy();
  process.exit(0);
});
