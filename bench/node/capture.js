// Golden capture: what @segment/analytics-node 3.1.0 puts on the wire for the seed
// document's calls. Starts a loopback HTTP server, points analytics-node at it, makes
// the calls, closeAndFlush(), and writes every received request (method, path,
// lower-cased headers, parsed JSON body) to tests/data/analytics-node-3.1.0-requests.json
// (or the path given as the first argument).
//
//   cd bench/node && npm ci && node capture.js
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const zlib = require("zlib");

const { Analytics } = require("@segment/analytics-node");
const pkg = require("@segment/analytics-node/package.json");

const OUT =
  process.argv[2] ||
  path.join(__dirname, "..", "..", "tests", "data", `analytics-node-${pkg.version}-requests.json`);

const WATCHDOG_MS = 30000;

function main() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let raw = Buffer.concat(chunks);
      const encoding = (req.headers["content-encoding"] || "").toLowerCase();
      if (encoding === "gzip") raw = zlib.gunzipSync(raw);
      let body;
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch (e) {
        body = { _unparsed: raw.toString("utf8") };
      }
      const headers = {};
      for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = v;
      requests.push({ method: req.method, path: req.url, headers, body });
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"success":true}');
    });
  });

  const watchdog = setTimeout(() => {
    console.error("capture.js: watchdog fired, giving up");
    process.exit(2);
  }, WATCHDOG_MS);

  server.listen(0, "127.0.0.1", async () => {
    const port = server.address().port;
    const analytics = new Analytics({
      writeKey: "WRITE_KEY",
      host: `http://127.0.0.1:${port}`,
      path: "/backend/v1/batch",
      maxEventsInBatch: 15,
      flushInterval: 50,
    });
    const errors = [];
    analytics.on("error", (err) => errors.push(String((err && err.reason) || err)));

    // The seed document's calls (journy.io's page for its Node.js SDK).
    analytics.identify({
      anonymousId: "48d213bb-95c3-4f8d-af97-86b2b404dcfe",
      traits: { friends: 42 },
    });
    analytics.identify({
      userId: "f4ca124298",
      traits: {
        firstName: "Elon",
        lastName: "Musk",
        email: "elon@tesla.com",
        friends: 42,
      },
    });
    analytics.group({
      userId: "f4ca124298",
      groupId: "tesla",
      traits: { name: "Tesla", industry: "Automotive", employees: 127855, role: "admin" },
    });
    analytics.track({
      userId: "f4ca124298",
      event: "Car Sold",
      properties: { revenue: 39999.99, shipping: "200-day" },
      context: { groupId: "tesla" },
      timestamp: new Date("2015-12-12T19:11:00Z"),
    });
    analytics.page({
      userId: "f4ca124298",
      category: "Docs",
      name: "Pricing",
      properties: { url: "https://journy.io/pricing" },
    });
    analytics.screen({
      userId: "f4ca124298",
      name: "Home",
    });
    analytics.alias({
      userId: "f4ca124298",
      previousId: "48d213bb-95c3-4f8d-af97-86b2b404dcfe",
    });

    await analytics.closeAndFlush({ timeout: 10000 });
    clearTimeout(watchdog);
    server.close();

    const nEvents = requests.reduce(
      (n, r) => n + (r.body && Array.isArray(r.body.batch) ? r.body.batch.length : 0),
      0,
    );
    if (errors.length || nEvents !== 7) {
      console.error(`capture.js: expected 7 events, got ${nEvents}; errors: ${errors}`);
      process.exit(1);
    }
    const doc = {
      library: pkg.name,
      version: pkg.version,
      node: process.version,
      settings: { writeKey: "WRITE_KEY", path: "/backend/v1/batch", maxEventsInBatch: 15, flushInterval: 50 },
      requests,
    };
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    fs.writeFileSync(OUT, JSON.stringify(doc, null, 2) + "\n");
    console.log(`wrote ${requests.length} request(s), ${nEvents} events to ${OUT}`);
  });
}

main();
