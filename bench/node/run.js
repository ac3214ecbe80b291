// One measurement of @segment/analytics-node in a fresh node process, for `python -m bench`.
//
//   node run.js deliver URL N BATCH FLUSH_MS WARMUP
//   node run.js memory  URL N BATCH FLUSH_MS WARMUP
//
// Prints one line `RESULT {json}` (same keys as bench/runner.py). Node is single-threaded:
// nothing is delivered while a synchronous loop runs, so the loop yields to the event loop
// (setImmediate, untimed) after every BATCH calls, as a server yields between requests.
"use strict";

const { Analytics } = require("@segment/analytics-node");
const pkg = require("@segment/analytics-node/package.json");

const EVENT = "Car Sold";
const SHIPPING = ["200-day", "2-day", "next-day", "pickup"];
const USER_IDS = Array.from({ length: 1000 }, (_, i) => `user-${String(i).padStart(6, "0")}`);

function makeProps(i) {
  return {
    revenue: 39999.99 + (i % 100),
    shipping: SHIPPING[i & 3],
    sku: "model-s",
    quantity: (i % 5) + 1,
  };
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

function summarize(latNs) {
  const v = Float64Array.from(latNs).sort();
  const n = v.length;
  const rank = (q) => v[Math.max(0, Math.min(n - 1, Math.round((q / 100) * n + 0.5) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += v[i];
  return {
    calls: n,
    median_us: rank(50) / 1000,
    p99_us: rank(99) / 1000,
    mean_us: sum / n / 1000,
    max_us: v[n - 1] / 1000,
  };
}

async function deliver(url, n, batch, flushMs, warmup) {
  const analytics = new Analytics({
    writeKey: "WRITE_KEY",
    host: url,
    path: "/v1/batch",
    maxEventsInBatch: batch,
    flushInterval: flushMs,
  });
  let errors = 0;
  analytics.on("error", () => errors++);
  const warm = Math.min(warmup, n);
  const lat = new Float64Array(n - warm);
  const rss0 = process.memoryUsage().rss;
  const cpu0 = cpuSeconds();
  const t0 = process.hrtime.bigint();
  let loopNs = 0n;
  for (let i = 0; i < n; i++) {
    const props = makeProps(i);
    const uid = USER_IDS[i % 1000];
    const s = process.hrtime.bigint();
    analytics.track({ userId: uid, event: EVENT, properties: props });
    const e = process.hrtime.bigint();
    if (i >= warm) lat[i - warm] = Number(e - s);
    if ((i + 1) % batch === 0) {
      loopNs += process.hrtime.bigint() - t0;
      await tick();
    }
  }
  const tCalls = Number(process.hrtime.bigint() - t0) / 1e9;
  await analytics.closeAndFlush({ timeout: 120000 });
  const tTotal = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds() - cpu0;
  return Object.assign(summarize(lat), {
    events: n,
    warmup: warm,
    calls_seconds: tCalls,
    total_seconds: tTotal,
    throughput_eps: n / tTotal,
    cpu_seconds: cpu,
    cpu_per_100k: (cpu / n) * 100000,
    rss_start: rss0,
    peak_rss: process.resourceUsage().maxRSS * 1024,
    info: { errors },
  });
}

async function memory(url, n, batch, flushMs, warmup) {
  const analytics = new Analytics({
    writeKey: "WRITE_KEY",
    host: url,
    path: "/v1/batch",
    maxEventsInBatch: batch,
    flushInterval: flushMs,
  });
  analytics.on("error", () => {});
  for (let i = 0; i < warmup; i++) {
    analytics.track({ userId: USER_IDS[i % 1000], event: EVENT, properties: makeProps(i) });
  }
  if (global.gc) global.gc();
  await new Promise((r) => setTimeout(r, 200));
  const rss0 = process.memoryUsage().rss;
  const peak0 = process.resourceUsage().maxRSS * 1024;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    analytics.track({ userId: USER_IDS[i % 1000], event: EVENT, properties: makeProps(i) });
    if ((i + 1) % batch === 0) await tick();
  }
  const tCalls = Number(process.hrtime.bigint() - t0) / 1e9;
  await new Promise((r) => setTimeout(r, 200));
  const rss1 = process.memoryUsage().rss;
  const peak1 = process.resourceUsage().maxRSS * 1024;
  const peakGrowth = Math.max(rss1, peak1 > peak0 ? peak1 : rss1) - rss0;
  return {
    events: n,
    calls_seconds: tCalls,
    rss_before: rss0,
    rss_after: rss1,
    peak_rss: peak1,
    rss_growth: rss1 - rss0,
    peak_growth: peakGrowth,
    bytes_per_event: peakGrowth / n,
    info: {},
  };
}

async function main() {
  const [scenario, url, nStr, batchStr, flushStr, warmStr] = process.argv.slice(2);
  const n = parseInt(nStr || "20000", 10);
  const batch = parseInt(batchStr || "100", 10);
  const flushMs = parseInt(flushStr || "500", 10);
  const warm = parseInt(warmStr || "200", 10);
  const result = { sdk: "node", scenario, version: pkg.version, node: process.version };
  if (scenario === "deliver") Object.assign(result, await deliver(url, n, batch, flushMs, warm));
  else if (scenario === "memory") Object.assign(result, await memory(url, n, batch, flushMs, warm));
  else throw new Error(`unknown scenario ${scenario}`);
  process.stdout.write("RESULT " + JSON.stringify(result) + "\n");
  process.exit(0);
}

const watchdog = setTimeout(() => {
  console.error("run.js: watchdog fired");
  process.exit(3);
}, 300000);
watchdog.unref();

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
