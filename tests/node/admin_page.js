// admin_page.js: drives murmur's admin page in headless Debian chromium with
// playwright-core, for tests/spec/admin_spec.lua.
//
//   node tests/node/admin_page.js --url http://127.0.0.1:PORT/ --pipeline P
//        --entity E [--token T] [--records N] [--series 1] [--method M]
//        [--dead-letters P] [--chromium /usr/bin/chromium | --ws WS_ENDPOINT]
//
// Loads the page, waits for the pipeline table (and, with --records, for a
// live counter showing N), reaches the lookup form with
// the keyboard (Tab from the top of the page), looks E up in P, and waits
// for the result; with --method, then waits for a poll to show method M's
// calls since the lookup and their rate; with --dead-letters, then shows
// pipeline P's dead-letter tail. Prints one JSON object on stdout:
//   {"console_errors":[...], "pipelines":[names listed], "rows":{name:[cells]},
//    "engine":"...", "sources":"...", "unlabelled":[ids],
//    "tab_reached_lookup":bool, "value":"...", "bars":[{"item":..,"count":..}],
//    "series_points":N, "reload_text":"...", "ready":"...",
//    "server":"...", "methods":{name:[calls, errors, calls/s, mean ms]},
//    "dl_status":"...", "dl_lines":[...]}
// and exits 0; a page that never shows what is waited for exits 1 with the
// reason on stderr. Nothing is asserted here: the spec compares the output
// with `murmur query`. With --ws it connects to the browser that
// tests/node/admin_browser.js printed the endpoint of (a new context, closed
// when done) instead of launching chromium itself.
"use strict";
const { chromium } = require("playwright-core");

// How long the page may take to show what is waited for. A page here shows
// it within a second; the margin is for a machine that runs the rest of the
// suite beside this (20 s ran out once under four parallel test runs).
const WAIT_MS = 60000;

function args() {
  const a = { chromium: "/usr/bin/chromium" };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, "")] = v[i + 1];
  return a;
}

async function main() {
  const a = args();
  const browser = a.ws ? await chromium.connect(a.ws) : await chromium.launch({ executablePath: a.chromium,
    headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  const out = { console_errors: [] };
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
    page.on("pageerror", (e) => out.console_errors.push(String(e)));
    // Anything the page asks from another origin is an error: it must work offline.
    page.on("request", (r) => {
      if (!r.url().startsWith(a.url.replace(/\/$/, ""))) out.console_errors.push("external request: " + r.url());
    });
    if (a.token) await page.addInitScript((t) => sessionStorage.setItem("murmur-token", t), a.token);
    await page.goto(a.url, { waitUntil: "load", timeout: WAIT_MS });
    await page.waitForSelector("#pipelines tr", { timeout: WAIT_MS });
    out.pipelines = await page.$$eval("#pipelines tr", (rows) => rows.map((r) => r.getAttribute("data-pipeline")));
    // The live counters, once a poll has filled them (murmur run --listen).
    if (a.records) await page.waitForFunction((n) => Array.from(document.querySelectorAll("#pipelines tr td.num"))
      .some((td) => td.textContent === n), a.records, { timeout: WAIT_MS });
    out.rows = await page.$$eval("#pipelines tr", (rows) => Object.fromEntries(rows.map((r) =>
      [r.getAttribute("data-pipeline"), Array.from(r.querySelectorAll("td")).map((td) => td.textContent)])));
    out.engine = await page.textContent("#engine");
    out.sources = await page.textContent("#sources");
    out.ready = await page.textContent("#ready");
    out.reload_text = await page.textContent("#reload");
    // Every form control has a label.
    out.unlabelled = await page.$$eval("input, select, button", (els) =>
      els.filter((e) => e.tagName !== "BUTTON" ? !(e.labels && e.labels.length) : !e.textContent.trim())
        .map((e) => e.id || e.outerHTML));
    // Keyboard: Tab from the top reaches the lookup's pipeline select.
    await page.focus("body");
    out.tab_reached_lookup = false;
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate(() => document.activeElement && document.activeElement.id === "lk-pipeline")) {
        out.tab_reached_lookup = true;
        break;
      }
    }
    await page.selectOption("#lk-pipeline", a.pipeline);
    await page.keyboard.press("Tab");
    await page.keyboard.type(a.entity);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#lookup-value", { timeout: WAIT_MS });
    out.value = await page.textContent("#lookup-value");
    out.status = await page.textContent("#lookup-status");
    if (await page.$("#topk-chart")) {
      out.bars = await page.$$eval("#topk-chart g.item", (gs) => gs.map((g) => ({
        item: g.getAttribute("data-item"),
        count: Number(g.querySelector("title").textContent.split(": ")[1].split(" ")[0]),
        width: Number(g.querySelector("rect").getAttribute("width")),
      })));
    }
    if (a.series) {
      await page.waitForSelector("#series-chart", { timeout: WAIT_MS });
      out.series_points = await page.$$eval("#series-chart circle", (c) => c.length);
      out.series_label = await page.getAttribute("#series-chart", "aria-label");
    }
    if (a.method) {
      // The row is redrawn every 2 s: wait for one drawn after the lookup
      // (its calls counted) with a rate (two polls seen).
      const before = Number(await page.evaluate((m) => {
        const r = document.querySelector(`#methods tr[data-method="${m}"] td`);
        return r ? r.textContent.replace(/,/g, "") : "0";
      }, a.method));
      await page.waitForFunction(([m, n]) => {
        const tds = document.querySelectorAll(`#methods tr[data-method="${m}"] td`);
        return tds.length === 4 && Number(tds[0].textContent.replace(/,/g, "")) > n && tds[2].textContent !== "";
      }, [a.method, before], { timeout: WAIT_MS });
      out.server = await page.textContent("#server");
      out.methods = await page.$$eval("#methods tr", (rows) => Object.fromEntries(rows.map((r) =>
        [r.getAttribute("data-method"), Array.from(r.querySelectorAll("td")).map((td) => td.textContent)])));
    }
    if (a["dead-letters"]) {
      await page.selectOption("#dl-pipeline", a["dead-letters"]);
      await page.click("#dl-form button");
      await page.waitForFunction(() => !/^Reading/.test(document.getElementById("dl-status").textContent) &&
        document.getElementById("dl-status").textContent !== "", null, { timeout: WAIT_MS });
      out.dl_status = await page.textContent("#dl-status");
      out.dl_lines = (await page.textContent("#dl")).split("\n").filter((l) => l !== "");
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
