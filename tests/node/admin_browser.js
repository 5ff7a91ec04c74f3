// admin_browser.js: one headless Debian chromium that tests/node/admin_page.js
// runs connect to, for tests/spec/admin_spec.lua.
//
//   node tests/node/admin_browser.js [--chromium /usr/bin/chromium]
//
// Launches chromium through playwright-core's browser server on 127.0.0.1,
// prints its WebSocket endpoint (ws://...) on one line of stdout and keeps
// it until SIGTERM, which closes the browser. Each admin_page.js run with
// --ws opens a new browser context on it (its own storage and cookies), so a
// spec file pays for one chromium start-up (some 2-5 s) instead of one per
// page it drives.
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const v = process.argv.slice(2);
  const i = v.indexOf("--chromium");
  const server = await chromium.launchServer({ executablePath: i >= 0 ? v[i + 1] : "/usr/bin/chromium",
    headless: true, host: "127.0.0.1", args: ["--no-sandbox", "--disable-gpu"] });
  process.stdout.write(server.wsEndpoint() + "\n");
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
