// Sends raw bytes to a server and prints what comes back, for the hostile
// HTTP spec: requests no well-behaved client would send.
//
//   node raw_http.mjs PORT FILE [--half-close] [--trickle MS] [--hold MS] [--ready PATH]
//
// FILE's bytes are written at once, or one byte every MS with --trickle;
// --half-close then shuts the write side (the server still answers);
// --hold keeps the connection open MS more; --ready writes an empty file at
// PATH once the connection is made, for a test to wait on. Prints the bytes
// received until the server closes (or 10 s pass, or the hold ends when one
// is given), then "\n--closed-by-server" if it closed.
import { connect } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";

const [port, file, ...flags] = process.argv.slice(2);
const data = readFileSync(file);
const opt = (name) => { const i = flags.indexOf(name); return i < 0 ? null : (flags[i + 1] ?? true); };
const chunks = [];
let closed = false;
const sock = connect(Number(port), "127.0.0.1");
sock.on("data", (d) => chunks.push(d));
sock.on("error", () => {});
sock.on("close", () => { closed = true; finish(); });
// A hold, not the 10 s cutoff, decides how long a holder stays: on a loaded
// machine its own start can take a good part of 10 s.
const timer = opt("--hold") ? null : setTimeout(finish, 10000);
function finish() {
  clearTimeout(timer);
  process.stdout.write(Buffer.concat(chunks));
  if (closed) process.stdout.write("\n--closed-by-server");
  process.exit(0);
}
sock.on("connect", async () => {
  const ready = opt("--ready");
  if (ready) writeFileSync(ready, "");
  const trickle = opt("--trickle");
  if (trickle) {
    for (const b of data) {
      if (closed) return;
      sock.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, Number(trickle)));
    }
  } else {
    sock.write(data);
  }
  if (opt("--half-close")) sock.end();
  const hold = opt("--hold");
  if (hold) setTimeout(finish, Number(hold));
});
