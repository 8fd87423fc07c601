// The relay server's plain HTTP side: the page's files and nothing else.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startRelay, REPO_ROOT, PATIENCE_MS } from "./helpers.mjs";

const STATIC = path.join(REPO_ROOT, "static");
// The stock client as npm installs it for these tests (the version pinned in package.json).
const CLIENT_DIST = fileURLToPath(new URL("./node_modules/socket.io-client/dist/", import.meta.url));
// Every file the stock server serves under /socket.io/ (socket.io's serveClient).
const CLIENT_FILES = [
  "socket.io.js",
  "socket.io.js.map",
  "socket.io.min.js",
  "socket.io.min.js.map",
  "socket.io.esm.min.js",
  "socket.io.esm.min.js.map",
  "socket.io.msgpack.min.js",
  "socket.io.msgpack.min.js.map",
];

describe("HTTP", () => {
  let relay;

  before(async () => {
    relay = await startRelay();
  });

  after(async () => {
    if (relay) await relay.stop();
  });

  /**
   * GET with the path sent verbatim (fetch would normalise "../" away) on a
   * fresh connection (agent: false sends "Connection: close"). Resolves with
   * {status, headers, body}.
   */
  function get(rawPath, { url = relay.url, agent = false } = {}) {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const req = http.get({ hostname, port, path: rawPath, agent, timeout: PATIENCE_MS }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      });
      req.on("timeout", () => req.destroy(new Error(`GET ${rawPath} timed out`)));
      req.on("error", reject);
    });
  }

  const files = [
    ["/", "index.html", /^text\/html/],
    ["/app.js", "app.js", /javascript/],
    ["/style.css", "style.css", /^text\/css/],
    ["/favicon.svg", "favicon.svg", /^image\/svg\+xml/],
    ["/favicon.ico", "favicon.svg", /^image\/svg\+xml/],
  ];
  for (const [urlPath, file, type] of files) {
    it(`GET ${urlPath} serves static/${file}`, async () => {
      const res = await get(urlPath);
      assert.equal(res.status, 200);
      assert.match(res.headers["content-type"] || "", type);
      assert.equal(res.body, readFileSync(path.join(STATIC, file), "utf8"));
    });
  }

  for (const file of CLIENT_FILES) {
    it(`GET /socket.io/${file} serves the pinned npm package's dist/${file}, byte for byte`, async () => {
      const res = await get(`/socket.io/${file}`);
      assert.equal(res.status, 200);
      assert.match(res.headers["content-type"] || "", file.endsWith(".map") ? /^application\/json/ : /javascript/);
      assert.equal(res.body, readFileSync(path.join(CLIENT_DIST, file), "utf8"));
      if (!file.endsWith(".map")) {
        assert.match(res.body, /Socket\.IO v4\.8\.3/);
        // The source map the file names is served too (no 404 in devtools).
        const map = res.body.match(/sourceMappingURL=(\S+)\s*$/)[1];
        assert.equal((await get(`/socket.io/${map}`)).status, 200, map);
      }
    });
  }

  it("the client files revalidate by version (ETag, 304)", async () => {
    const first = await get("/socket.io/socket.io.min.js");
    assert.equal(first.headers.etag, '"4.8.3"');
    const { hostname, port } = new URL(relay.url);
    const status = await new Promise((resolve, reject) => {
      http
        .get({ hostname, port, path: "/socket.io/socket.io.min.js", agent: false, headers: { "If-None-Match": '"4.8.3"' } }, (res) => {
          res.resume();
          resolve(res.statusCode);
        })
        .on("error", reject);
    });
    assert.equal(status, 304);
  });

  const notServed = [
    "/package.json",
    "/package-lock.json",
    "/node_modules/socket.io-client/package.json",
    "/node_modules/socket.io-client/dist/socket.io.min.js",
    "/socket.io/package.json",
    "/socket.io/socket.io.slim.js",
    "/static/index.html",
    "/../Cargo.toml",
    "/%2e%2e/Cargo.toml",
    "/app.js/../../Cargo.toml",
    "/nope",
  ];
  for (const urlPath of notServed) {
    it(`GET ${urlPath} is not served`, async () => {
      const { status } = await get(urlPath);
      assert.ok(status >= 400 && status < 500, `expected a 4xx, got ${status}`);
    });
  }

  it("exits on SIGTERM while an idle keep-alive HTTP connection is open", { timeout: 120000 }, async () => {
    // Browsers keep idle HTTP/1.1 connections open for minutes; a restart must not wait for them.
    // With relay's own timeouts (the idle connection's, the shutdown's) at 10 minutes, an exit
    // within stop()'s patience means it did not wait for the connection.
    const own = await startRelay({ env: { HEADER_TIMEOUT_MS: "600000", SHUTDOWN_TIMEOUT_MS: "600000" } });
    const agent = new http.Agent({ keepAlive: true });
    try {
      const res = await get("/", { url: own.url, agent });
      assert.equal(res.status, 200);
      const exit = await own.stop();
      assert.equal(exit.code, 0, `exit status ${JSON.stringify(exit)}`);
    } finally {
      agent.destroy();
      await own.stop().catch(() => {});
    }
  });
});
