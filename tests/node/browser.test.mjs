// The chat page (static/) in headless Chromium, driven by playwright-core.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import { io } from "socket.io-client";
import { startRelay, withTimeout, PATIENCE_MS, mysqlExec, freshDbName, until, launchChromium } from "./helpers.mjs";
import { spawn } from "node:child_process";
import { startProxy } from "./proxy.mjs";

// How long a page may take to show what a step waits for: a bound for a hung page, sized for a
// busy machine, not a speed requirement.
const WAIT_MS = PATIENCE_MS;
const MYSQL_URL = new URL(process.env.RELAY_TEST_MYSQL_URL || "mysql://root@127.0.0.1:3306");

/**
 * An init script (called with options): the page's io() gets `options` over its own (a short
 * ackTimeout, the transports to use), and `window.__transport()` says which transport the
 * connection is on.
 */
function ioOptions(options) {
  let real;
  Object.defineProperty(window, "io", {
    configurable: true,
    get: () => real,
    set(stock) {
      real = Object.assign(function (uri, opts) {
        if (typeof uri === "object") [uri, opts] = [undefined, uri];
        const socket = stock(uri, { ...opts, ...options });
        window.__transport = () => socket.io.engine && socket.io.engine.transport.name;
        return socket;
      }, stock);
    },
  });
}

/** `ioOptions` as an init script's source. */
const withIo = (options) => `(${ioOptions})(${JSON.stringify(options)})`;

/** The client gives up within a second instead of after the page's 4 x 10 s. */
const shortAckTimeout = withIo({ ackTimeout: 500, retries: 1 });

/**
 * Runs `body({ own, proxy })` with relay on a fresh MySQL database it reaches through a TCP proxy
 * the test can cut (prefer_socket=false: not around it), DB_TIMEOUT_MS 300; cleans up after.
 */
async function behindCuttableDatabase(body) {
  const proxy = await startProxy({ host: MYSQL_URL.hostname || "127.0.0.1", port: Number(MYSQL_URL.port || 3306) });
  const user = MYSQL_URL.username || "root";
  const auth = MYSQL_URL.password ? `${user}:${MYSQL_URL.password}` : user;
  const dbName = freshDbName();
  let own;
  try {
    own = await startRelay({
      store: "mysql",
      dbName,
      env: { DATABASE_URL: `mysql://${auth}@127.0.0.1:${proxy.port}/${dbName}?prefer_socket=false`, DB_TIMEOUT_MS: "300" },
    });
    await body({ own, proxy });
  } finally {
    proxy.restore();
    if (own) await own.stop();
    else await mysqlExec(`DROP DATABASE IF EXISTS \`${dbName}\``).catch(() => {});
    await proxy.close();
  }
}

/** Waits until an own row with `text` shows as sent. */
async function sent(page, text) {
  await page.waitForFunction((t) => [...document.querySelectorAll("#messages > li")].some((li) => li.textContent === t && li.dataset.state === "sent"), text, {
    timeout: PATIENCE_MS,
  });
}

/** Stores `count` messages through a stock client, waiting for each ack. */
async function seed(url, count, tag) {
  const sender = io(url, { transports: ["websocket"], forceNew: true });
  try {
    for (let i = 0; i < count; i++) {
      const ack = await sender.timeout(PATIENCE_MS).emitWithAck("chat message", `${tag} ${i}`, `${tag}-${i}`);
      assert.equal(ack, undefined, `seed message ${i} stored without error`);
    }
  } finally {
    sender.disconnect();
  }
}

describe("chat page in Chromium", () => {
  let relay;
  let browser;
  const problems = []; // console errors and page errors, from every page

  before(async () => {
    // Out of the box: no DATABASE_URL, so relay's default SQLite file in its working directory.
    relay = await startRelay({ store: "default" });
    browser = await launchChromium();
  });

  after(async () => {
    await closePages();
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  /** Browser contexts still open; a test closes its own before it stops its server. */
  const contexts = new Set();
  async function closePages() {
    await Promise.all([...contexts].map((c) => c.close().catch(() => {})));
    contexts.clear();
  }

  /**
   * Opens the chat page in a fresh context. `expectedErrors` (RegExps) are console errors the test
   * provokes on purpose (a refused WebSocket upgrade); any other problem is collected.
   */
  async function openPage(name, { url = relay.url, initScript, expectedErrors = [], expectedStatus = [] } = {}) {
    const context = await browser.newContext();
    contexts.add(context);
    if (initScript) await context.addInitScript(initScript);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("console", (msg) => {
      if (msg.type() === "error" && !expectedErrors.some((re) => re.test(msg.text()))) problems.push(`${name} console.error: ${msg.text()} (${JSON.stringify(msg.location())})`);
    });
    page.on("pageerror", (err) => problems.push(`${name} page error: ${err.message}`));
    page.on("requestfailed", (req) => {
      // a WebSocket closed on purpose is not a failed request; anything else is worth knowing
      problems.push(`${name} request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`);
    });
    page.on("response", (res) => {
      if (res.status() >= 400 && !expectedStatus.includes(res.status())) problems.push(`${name} HTTP ${res.status()} for ${res.url()}`);
    });
    await page.goto(url + "/", { waitUntil: "load" });
    return page;
  }

  const items = (page) => page.locator("#messages li").allTextContents();

  /** Waits until the page's message list equals `expected` exactly. */
  async function expectMessages(page, name, expected) {
    try {
      await page.waitForFunction(
        (exp) => {
          const got = [...document.querySelectorAll("#messages li")].map((li) => li.textContent);
          return got.length === exp.length && got.every((t, i) => t === exp[i]);
        },
        expected,
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch {
      assert.deepEqual(await items(page), expected, `${name}: #messages li should be exactly ${JSON.stringify(expected)}`);
    }
  }

  async function type(page, text) {
    await page.locator("#input").fill(text);
    await page.locator("#input").press("Enter");
    await page.waitForFunction(() => document.getElementById("input").value === "", null, { timeout: WAIT_MS });
  }

  it("page structure and assets", { timeout: 120000 }, async () => {
    const page = await openPage("structure");
    assert.equal(await page.locator("ul#messages").count(), 1);
    assert.equal(await page.locator("form#form input#input").getAttribute("autocomplete"), "off");
    assert.equal(await page.locator("header#bar button#toggle-btn").textContent(), "Disconnect");
    assert.equal(await page.locator('link[rel="icon"]').getAttribute("href"), "/favicon.svg");
    assert.ok(await page.locator('meta[name="viewport"]').count(), "viewport meta missing");
    const hasIo = await page.evaluate(() => typeof window.io === "function");
    assert.ok(hasIo, "window.io missing: /socket.io/socket.io.js did not load");
    const bg = await page.evaluate(() => getComputedStyle(document.getElementById("form")).position);
    assert.equal(bg, "fixed", "the form should be fixed at the bottom");
    assert.equal(await page.locator("header#bar #status").count(), 1, "the status badge sits in the top bar");
    assert.equal(await page.locator("#input").getAttribute("maxlength"), null, "maxlength counts UTF-16 units, not the server's bytes");
    await page.context().close();
  });

  it("two pages chat live, catch up after Connect, keep history on reload, render text literally", { timeout: 300000 }, async () => {
    const p1 = await openPage("page1");
    const p2 = await openPage("page2");
    const history = [];

    // page 1 -> both
    history.push("hello from page 1");
    await type(p1, history.at(-1));
    await expectMessages(p1, "page1", history);
    await expectMessages(p2, "page2", history);

    // page 2 -> both
    history.push("hi from page 2 👋");
    await type(p2, history.at(-1));
    await expectMessages(p2, "page2", history);
    await expectMessages(p1, "page1", history);

    // page 2 disconnects; page 1 sends two messages meanwhile
    const toggle2 = p2.locator("#toggle-btn");
    const state = (p) => p.evaluate(() => document.getElementById("status").dataset.state);
    assert.equal(await state(p2), "connected", "the page shows it is connected");
    await toggle2.click();
    await p2.waitForFunction(() => document.getElementById("toggle-btn").textContent === "Connect", null, { timeout: WAIT_MS });
    assert.equal(await state(p2), "offline", "the page shows it is offline");
    const seenByP2 = [...history];
    history.push("missed one", "missed two");
    await type(p1, "missed one");
    await type(p1, "missed two");
    await expectMessages(p1, "page1", history);
    assert.deepEqual(await items(p2), seenByP2, "page2 received messages while disconnected");

    // page 2 reconnects and gets exactly the missed ones, in order
    await toggle2.click();
    assert.equal(await toggle2.textContent(), "Disconnect");
    await expectMessages(p2, "page2", history);
    await p2.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });

    // live traffic after the catch-up: still no duplicates
    history.push("<b>x</b>");
    await type(p2, history.at(-1));
    await expectMessages(p1, "page1", history);
    await expectMessages(p2, "page2", history);
    for (const [name, p] of [["page1", p1], ["page2", p2]]) {
      assert.equal(await p.locator("#messages b").count(), 0, `${name}: <b>x</b> was rendered as HTML`);
      assert.equal(await p.locator("#messages li").last().innerHTML(), "&lt;b&gt;x&lt;/b&gt;");
    }

    // reload keeps the whole history, in order
    await p1.reload({ waitUntil: "load" });
    await expectMessages(p1, "page1 (reloaded)", history);

    // and the reloaded page still chats
    history.push("after reload");
    await type(p1, history.at(-1));
    await expectMessages(p1, "page1", history);
    await expectMessages(p2, "page2", history);

    await withTimeout(Promise.all([p1.context().close(), p2.context().close()]), WAIT_MS, "closing pages");
  });

  /**
   * A relay whose database already holds `rows` messages `history 1`…`history <rows>` (written
   * with MariaDB's sequence engine, then relay started on it): a big history in seconds.
   */
  async function relayWithHistory(rows) {
    const dbName = freshDbName();
    const first = await startRelay({ dbName });
    await first.stop({ dropDatabase: false });
    await mysqlExec(
      // The sequence engine's seq_1_to_N tables exist only inside a selected database.
      `USE \`${dbName}\`; INSERT INTO messages (client_offset, content) ` +
        `SELECT CONCAT('seed-', seq), CONCAT('history ', seq) FROM seq_1_to_${rows}`,
    );
    return startRelay({ dbName, env: { MAX_MESSAGES_PER_SECOND: "0" } });
  }

  const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `history ${from + i}`);

  it("a first visit to a big history shows the newest page; 'load earlier' pages back, in order, once", { timeout: 600000 }, async () => {
    // BIG_HISTORY rows (default 1,000,000): the page must not care how many there are.
    const rows = Number(process.env.BIG_HISTORY || 1000000);
    const big = await relayWithHistory(rows);
    try {
      const started = Date.now();
      const page = await openPage("big history", { url: big.url });
      await page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 100, null, { timeout: WAIT_MS });
      const shown = Date.now() - started;
      assert.deepEqual(await items(page), range(rows - 99, rows), "the newest 100, in order");
      // Usable: typing and sending works at once (the page is not rendering a million rows).
      await type(page, "after the big history");
      await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === "after the big history" && li.dataset.state === "sent"), null, { timeout: WAIT_MS });
      // Three older pages, each above the last, nothing twice, while a live message arrives.
      for (let n = 1; n <= 3; n++) {
        if (n === 2) await emitOne(big.url, "live while paging");
        // A DOM click: Playwright's own scrolls the button into view first, which reaches the
        // top of the list, where the page may already be loading the earlier page by itself
        // (and hides the button meanwhile).
        await page.locator("#earlier").waitFor({ state: "visible", timeout: WAIT_MS });
        await page.evaluate(() => {
          const button = document.getElementById("earlier");
          if (button && !button.hidden) button.click();
        });
        await page.waitForFunction((want) => document.querySelectorAll("#messages li[data-id]").length >= want, 100 * (n + 1) + 1, { timeout: WAIT_MS });
      }
      const texts = (await items(page)).filter((t) => t.startsWith("history "));
      assert.deepEqual(texts, range(rows - 399, rows), "four pages, in order, no duplicate at the seams");
      await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === "live while paging"), null, { timeout: WAIT_MS });
      console.log(`# big history: ${rows} rows, the newest page on screen ${shown} ms after navigation started`);
      await page.context().close();
    } finally {
      await closePages();
      await big.stop();
    }
  });

  it("a reader scrolled up stays put while messages arrive, and a button takes them to the new ones", { timeout: 300000 }, async () => {
    await seed(relay.url, 60, "scrollback");
    const page = await openPage("scrollback");
    await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === "scrollback 59"), null, { timeout: WAIT_MS });
    const atEnd = () => page.evaluate(() => window.innerHeight + window.scrollY >= document.body.scrollHeight - 2);
    await page.waitForFunction(() => window.innerHeight + window.scrollY >= document.body.scrollHeight - 2, null, { timeout: WAIT_MS });
    // Reading back (not at the very top, which would load an earlier page).
    await page.evaluate(() => window.scrollTo(0, 200));
    const y = await page.evaluate(() => window.scrollY);
    await emitOne(relay.url, "below one");
    await emitOne(relay.url, "below two");
    await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === "below two"), null, { timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => window.scrollY), y, "the page did not move under the reader");
    const latest = page.locator("#latest");
    await latest.waitFor({ state: "visible", timeout: WAIT_MS });
    assert.equal(await latest.textContent(), "2 new messages \u2193");
    await latest.click();
    await page.waitForFunction(() => window.innerHeight + window.scrollY >= document.body.scrollHeight - 2, null, { timeout: WAIT_MS });
    await latest.waitFor({ state: "hidden", timeout: WAIT_MS });
    // At the end, the page follows live messages again.
    await emitOne(relay.url, "followed");
    await page.waitForFunction(() => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === "followed"), null, { timeout: WAIT_MS });
    await page.waitForFunction(() => window.innerHeight + window.scrollY >= document.body.scrollHeight - 2, null, { timeout: WAIT_MS });
    assert.ok(await atEnd());
    assert.equal(await latest.isHidden(), true);
    await page.context().close();
  });

  /** Sends one message from a client of its own and waits for the ack. */
  async function emitOne(url, text) {
    const sender = io(url, { transports: ["websocket"], forceNew: true });
    try {
      await sender.timeout(PATIENCE_MS).emitWithAck("chat message", text, `one-${Math.random()}`);
    } finally {
      sender.disconnect();
    }
  }

  it("behind a proxy that refuses WebSocket, the page chats over HTTP long-polling", { timeout: 300000 }, async () => {
    // A proxy of the test's own that passes plain HTTP and refuses every WebSocket upgrade, as
    // some corporate proxies do.
    const http = await import("node:http");
    const target = new URL(relay.url);
    const proxy = http.createServer((req, res) => {
      const upstream = http.request(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode, up.headers);
          up.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    });
    const refused = [];
    proxy.on("upgrade", (req, socket) => {
      refused.push(req.url);
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    });
    await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${proxy.address().port}`;
    try {
      // Chromium logs each refused upgrade as a console error; that is the point of this proxy.
      const expectedErrors = [/WebSocket connection to '.*' failed/];
      const a = await openPage("polling A", { url, expectedErrors });
      const b = await openPage("polling B", { url, expectedErrors });
      const text = `over polling ${Math.random().toString(36).slice(2)}`;
      await type(a, text);
      for (const page of [a, b]) {
        await page.waitForFunction((t) => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === t), text, { timeout: WAIT_MS });
      }
      assert.ok(refused.length > 0, "the page tried to upgrade and was refused");
      const transport = await a.evaluate(() => document.getElementById("status").dataset.state);
      assert.equal(transport, "connected");
    } finally {
      await closePages();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  /** The note drawn under an own message (its ::after content), as the user sees it. */
  const noteOf = (li) => li.evaluate((el) => getComputedStyle(el, "::after").content.replace(/^"|"$/g, ""));

  /** The one row whose text is `text`. */
  async function rowWithText(page, text) {
    const rows = page.locator("#messages > li").filter({ hasText: text });
    await page.waitForFunction((t) => [...document.querySelectorAll("#messages > li")].filter((li) => li.textContent === t).length === 1, text, {
      timeout: WAIT_MS,
    });
    return rows.first();
  }

  it("an own message shows as pending until acked, then as sent, and survives being typed offline", { timeout: 300000 }, async () => {
    const own = await startRelay({ store: "sqlite" });
    try {
      const page = await openPage("pending", { url: own.url });
      const other = await openPage("pending (other)", { url: own.url });
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });

      // Offline: the message stays on screen, marked pending, and the input is free again.
      await page.locator("#toggle-btn").click();
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "offline", null, { timeout: WAIT_MS });
      const text = "typed while offline";
      await type(page, text);
      const row = await rowWithText(page, text);
      assert.equal(await row.getAttribute("data-state"), "pending");
      assert.match(await noteOf(row), /^sending/);
      assert.equal(await page.locator("#messages > li").last().textContent(), text, "a pending message is the last row");
      assert.deepEqual(await items(other), [], "nothing reached the server while offline");

      // Back online: the client sends it, the server acks it, the row says sent, once.
      await page.locator("#toggle-btn").click();
      await page.waitForFunction(
        (t) => {
          const rows = [...document.querySelectorAll("#messages > li")].filter((li) => li.textContent === t);
          return rows.length === 1 && rows[0].dataset.state === "sent";
        },
        text,
        { timeout: WAIT_MS },
      );
      assert.equal(await noteOf(await rowWithText(page, text)), "sent");
      assert.equal(await page.locator('#messages > li[data-state="pending"]').count(), 0);
      await expectMessages(page, "pending", [text]);
      await expectMessages(other, "pending (other)", [text]);
      assert.equal(await other.locator("#messages > li[data-state]").count(), 0, "another page's rows carry no own-message mark");

      // Online, the same: pending at once, then sent in its place in the history.
      await type(other, "from the other page");
      await type(page, "second");
      await expectMessages(page, "pending", [text, "from the other page", "second"]);
      await page.waitForFunction(() => document.querySelector("#messages > li:last-child").dataset.state === "sent", null, { timeout: WAIT_MS });

      // Someone else sends the same words while this page's message waits: the ack names its
      // row, so the own mark goes to the page's row, not to the other's that came first.
      await page.locator("#toggle-btn").click();
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "offline", null, { timeout: WAIT_MS });
      await type(page, "same words");
      const sender = io(own.url, { transports: ["websocket"], forceNew: true });
      try {
        await sender.timeout(PATIENCE_MS).emitWithAck("chat message", "same words", "same-words-other");
      } finally {
        sender.disconnect();
      }
      await page.locator("#toggle-btn").click();
      await page.waitForFunction(
        () => {
          const rows = [...document.querySelectorAll("#messages > li")].filter((li) => li.textContent === "same words");
          return rows.length === 2 && rows.every((li) => li.dataset.id) && !document.querySelector('#messages > li[data-state="pending"]');
        },
        null,
        { timeout: WAIT_MS },
      );
      const marks = await page.$$eval("#messages > li", (lis) =>
        lis.filter((li) => li.textContent === "same words").map((li) => [li.hasAttribute("data-own"), li.dataset.state || ""]),
      );
      assert.deepEqual(marks, [[false, ""], [true, "sent"]], "the other's row first, unmarked; the own row after it, sent");
      await Promise.all([page.context().close(), other.context().close()]);
    } finally {
      await closePages();
      await own.stop();
    }
  });

  it("own messages not yet acked are sent again after a reload, and stored once", { timeout: 300000 }, async () => {
    const own = await startRelay({ store: "sqlite" });
    try {
      const page = await openPage("outbox", { url: own.url });
      const other = await openPage("outbox (other)", { url: own.url });
      const connected = (p) => p.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
      await connected(page);

      // Typed while offline, then the tab reloads before it is back online: not lost.
      await page.locator("#toggle-btn").click();
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "offline", null, { timeout: WAIT_MS });
      await type(page, "typed offline, then reloaded");
      await type(page, "a second one");
      await page.reload({ waitUntil: "load" });
      await connected(page);
      await sent(page, "a second one");
      await sent(page, "typed offline, then reloaded");
      await expectMessages(other, "outbox (other)", ["typed offline, then reloaded", "a second one"]);

      // Acked messages are not kept: another reload sends nothing again.
      await page.reload({ waitUntil: "load" });
      await connected(page);
      await expectMessages(page, "outbox (reloaded again)", ["typed offline, then reloaded", "a second one"]);
      assert.equal(await page.locator('#messages > li[data-state="pending"]').count(), 0);
      assert.equal(await page.evaluate(() => sessionStorage.getItem("relay-outbox")), null);

      // Stored, but the answer never reached the tab (it reloaded first): sent again with the
      // same clientOffset, acked as a duplicate, shown once and marked as sent.
      const sender = io(own.url, { transports: ["websocket"], forceNew: true });
      try {
        await sender.timeout(PATIENCE_MS).emitWithAck("chat message", "stored before the reload", "outbox-test-1");
      } finally {
        sender.disconnect();
      }
      await page.evaluate(() =>
        sessionStorage.setItem("relay-outbox", JSON.stringify([{ room: "/", text: "stored before the reload", clientOffset: "outbox-test-1" }])),
      );
      await page.reload({ waitUntil: "load" });
      await connected(page);
      await sent(page, "stored before the reload");
      const all = ["typed offline, then reloaded", "a second one", "stored before the reload"];
      await expectMessages(page, "outbox (duplicate)", all);
      await expectMessages(other, "outbox (other)", all);
      await page.waitForFunction(() => sessionStorage.getItem("relay-outbox") === null, null, { timeout: WAIT_MS });
      await Promise.all([page.context().close(), other.context().close()]);
    } finally {
      await closePages();
      await own.stop();
    }
  });

  it("a message the server refuses shows as not sent, with the server's reason", { timeout: 300000 }, async () => {
    // A page that does not know the server's limit (an own page in STATIC_DIR without the
    // limit's meta tag: the page then assumes the default): the server refuses, and the page
    // shows the server's reason.
    const dir = mkdtempSync(path.join(os.tmpdir(), "relay_page_"));
    for (const f of ["index.html", "app.js", "style.css", "favicon.svg"]) {
      const text = readFileSync(new URL(`../../static/${f}`, import.meta.url), "utf8");
      writeFileSync(path.join(dir, f), f === "index.html" ? text.replace(/<meta name="relay-max-message-bytes"[^>]*>/, "") : text);
    }
    const own = await startRelay({ store: "sqlite", env: { MAX_MESSAGE_BYTES: "100", STATIC_DIR: dir } });
    try {
      const page = await openPage("server refuses", { url: own.url });
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
      const text = "x".repeat(150);
      await type(page, text);
      const row = await rowWithText(page, text);
      await page.waitForFunction((t) => [...document.querySelectorAll("#messages > li")].find((li) => li.textContent === t).dataset.state === "failed", text, {
        timeout: WAIT_MS,
      });
      assert.equal(await noteOf(row), "not sent: message too large: 150 bytes, the limit is 100 bytes (UTF-8)");
      await page.context().close();
    } finally {
      await closePages();
      await own.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a message never acked shows as not sent once the client's retries are used up", { timeout: 300000 }, async () => {
    try {
      await behindCuttableDatabase(async ({ own, proxy }) => {
        const page = await openPage("never acked", { url: own.url, initScript: shortAckTimeout });
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
        proxy.cut();
        const text = "lost in an outage";
        await type(page, text);
        const row = await rowWithText(page, text);
        await page.waitForFunction((t) => [...document.querySelectorAll("#messages > li")].find((li) => li.textContent === t).dataset.state === "failed", text, {
          timeout: WAIT_MS,
        });
        assert.equal(await noteOf(row), "not sent: operation has timed out \u2014 click to retry");
        assert.equal(await page.locator("#status").getAttribute("data-state"), "connected", "the connection itself stayed up");
        proxy.restore();
        // Nothing was stored behind the page's back.
        assert.equal((await mysqlExec(`SELECT COUNT(*) FROM \`${own.dbName}\`.messages`)).trim(), "0");
        // The text was kept: a click sends it again, once.
        await page.locator("#messages > li", { hasText: text }).click();
        await sent(page, text);
        assert.equal((await mysqlExec(`SELECT COUNT(*) FROM \`${own.dbName}\`.messages`)).trim(), "1");
        await page.context().close();
      });
    } finally {
      await closePages();
    }
  });

  it("the input takes what the server takes (65,535 UTF-8 bytes) and says why it refuses more", { timeout: 300000 }, async () => {
    const own = await startRelay({ store: "sqlite" });
    try {
      const page = await openPage("limit", { url: own.url });
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
      const notice = page.locator("#notice");

      // A paste far beyond the old 20,000-character cut is kept whole.
      await page.locator("#input").fill("a".repeat(70000));
      assert.equal(await page.locator("#input").evaluate((el) => el.value.length), 70000);
      await notice.waitFor({ state: "visible", timeout: WAIT_MS });
      assert.equal(await notice.textContent(), "Too long to send: 4,465 characters over the limit (65,535 bytes in UTF-8; this is 70,000).");

      // 32,768 characters, 65,536 bytes: one byte over. Refused by the page, kept in the input.
      const over = "\u00e9".repeat(32768);
      await page.locator("#input").fill(over);
      await page.locator("#input").press("Enter");
      assert.equal(await notice.textContent(), "Too long to send: 1 character over the limit (65,535 bytes in UTF-8; this is 65,536).");
      assert.equal(await page.locator("#input").getAttribute("aria-invalid"), "true");
      assert.equal(await page.locator("#input").evaluate((el) => el.value.length), over.length, "the refused text stays in the input");
      assert.equal(await page.locator("#messages > li").count(), 0, "nothing was sent");

      // Exactly the limit: sent, stored, shown whole.
      const max = "\u00e9".repeat(32767) + "!";
      await page.locator("#input").fill(max);
      await notice.waitFor({ state: "hidden", timeout: WAIT_MS });
      await type(page, max);
      await page.waitForFunction((n) => {
        const li = document.querySelector("#messages > li");
        return li && li.dataset.state === "sent" && li.textContent.length === n;
      }, max.length, { timeout: WAIT_MS });
      assert.equal(await page.locator("#messages > li").first().textContent(), max);
      await page.context().close();
    } finally {
      await closePages();
      await own.stop();
    }
  });

  it("the status badge and the notice never cover a message", { timeout: 300000 }, async () => {
    const own = await startRelay({ store: "sqlite" });
    try {
      await seed(own.url, 40, "row");
      for (const [name, viewport] of [
        ["desktop", { width: 1280, height: 720 }],
        ["phone", { width: 360, height: 640 }],
      ]) {
        const page = await openPage(`badge (${name})`, { url: own.url });
        await page.setViewportSize(viewport);
        await page.waitForFunction(() => document.querySelectorAll("#messages > li").length === 40, null, { timeout: WAIT_MS });
        // Last, a long pending message (offline) that wraps, with its note under it; and the
        // notice shown (a paste over the limit).
        await page.locator("#toggle-btn").click();
        await type(page, "a last message long enough to wrap on a phone, ".repeat(4).trim());
        await page.locator("#input").fill("w".repeat(70000));
        await page.locator("#notice").waitFor({ state: "visible", timeout: WAIT_MS });
        const geometry = () =>
          page.evaluate(() => {
            const box = (el) => el.getBoundingClientRect().toJSON();
            return {
              badge: box(document.getElementById("status")),
              bar: box(document.getElementById("bar")),
              form: box(document.getElementById("form")),
              rows: [...document.querySelectorAll("#messages > li")].map(box),
              notice: box(document.getElementById("notice")),
              noticeShown: !document.getElementById("notice").hidden,
            };
          });
        const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        const inside = (a, b) => a.left >= b.left && a.right <= b.right && a.top >= b.top && a.bottom <= b.bottom;

        await page.evaluate(() => window.scrollTo(0, 0));
        let g = await geometry();
        assert.ok(inside(g.badge, g.bar), `${name}: the badge is inside the top bar: ${JSON.stringify(g.badge)} in ${JSON.stringify(g.bar)}`);
        assert.ok(!overlap(g.bar, g.rows[0]), `${name}: the top bar covers the first message`);

        await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
        g = await geometry();
        assert.ok(inside(g.badge, g.bar), `${name}: the badge is inside the top bar`);
        // Rows scrolled up past the top bar pass under it (scrolling brings them back); the end of
        // the page, where new messages come, is never covered.
        const covered = g.rows.filter((r) => overlap(r, g.form));
        assert.deepEqual(covered, [], `${name}: at the end of the page, the form's bar covers a message`);
        assert.ok(!overlap(g.rows[g.rows.length - 1], g.bar), `${name}: the top bar covers the last message`);
        assert.ok(g.noticeShown, `${name}: the notice is shown`);
        assert.ok(!overlap(g.notice, g.form), `${name}: the notice is under the form's bar`);
        assert.deepEqual(g.rows.filter((r) => overlap(r, g.notice)), [], `${name}: the notice covers a message`);
        await page.context().close();
      }
    } finally {
      await closePages();
      await own.stop();
    }
  });

  it("on a phone the input keeps the room, nothing runs off the screen, and an empty chat says so", { timeout: 300000 }, async () => {
    const own = await startRelay({ store: "sqlite", env: { MAX_MESSAGE_BYTES: "100" } });
    try {
      for (const width of [320, 390, 1280]) {
        const page = await openPage(`layout ${width}`, { url: own.url });
        await page.setViewportSize({ width, height: 700 });
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
        const first = width === 320; // the chat is empty until the first page says hello
        if (first) {
          await page.locator("#empty").waitFor({ state: "visible", timeout: WAIT_MS });
          assert.equal(await page.locator("#empty").textContent(), "No messages yet. Say hello below.");
        }
        // While reconnecting the badge is at its widest: measure then too.
        for (const state of ["connected", "reconnecting"]) {
          await page.evaluate((st) => {
            const b = document.getElementById("status");
            b.dataset.state = st;
            b.textContent = st === "reconnecting" ? "reconnecting\u2026" : "connected";
          }, state);
          const g = await page.evaluate(() => {
            const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
            return { input: box("input"), toggle: box("toggle-btn"), badge: box("status"), title: box("title"), width: innerWidth };
          });
          assert.ok(g.input.width >= 0.55 * width, `${width} px, ${state}: the input is ${g.input.width} px wide`);
          for (const [name, b] of [["toggle", g.toggle], ["badge", g.badge]]) {
            assert.ok(b.left >= 0 && b.right <= g.width, `${width} px, ${state}: the ${name} runs off the screen: ${JSON.stringify(b)}`);
          }
        }
        if (process.env.RELAY_SCREENSHOTS) {
          await page.screenshot({ path: `${process.env.RELAY_SCREENSHOTS}/page-${width}.png` });
        }
        // The page checks lengths against the server's own limit (MAX_MESSAGE_BYTES=100 here).
        await page.locator("#input").fill("x".repeat(101));
        await page.locator("#notice").waitFor({ state: "visible", timeout: WAIT_MS });
        assert.equal(await page.locator("#notice").textContent(), "Too long to send: 1 character over the limit (100 bytes in UTF-8; this is 101).");
        if (first) {
          await page.locator("#input").fill("hello");
          await page.locator("#input").press("Enter");
          await page.locator("#empty").waitFor({ state: "hidden", timeout: WAIT_MS });
        }
        await page.context().close();
      }
    } finally {
      await closePages();
      await own.stop();
    }
  });

  it("acks that stall are shown at once, and the message still goes out when the server is back", { timeout: 300000 }, async () => {
    try {
      await behindCuttableDatabase(async ({ own, proxy }) => {
        const page = await openPage("stalled acks", { url: own.url });
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
        proxy.cut();
        const text = "waiting for the database";
        await type(page, text);
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "stalled", null, { timeout: 8000 });
        assert.equal(await page.locator("#status").textContent(), "server not answering");
        assert.match(await page.locator("#notice").textContent(), /not answering/);
        proxy.restore();
        await sent(page, text);
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
        await page.context().close();
      });
    } finally {
      await closePages();
    }
  });

  it("a page the server refuses (its origin check) says so instead of reconnecting for ever", { timeout: 300000 }, async () => {
    // The nginx trap: a proxy that passes `Host` without the port, so relay's origin check sees
    // the page's origin (with its port) as foreign and answers 403.
    const own = await startRelay({ store: "sqlite" });
    const target = new URL(own.url);
    const trap = http.createServer((req, res) => {
      const upstream = http.request(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.hostname } },
        (r) => {
          res.writeHead(r.statusCode, r.headers);
          r.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise((resolve) => trap.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${trap.address().port}`;
      const page = await openPage("refused", { url, expectedStatus: [403], expectedErrors: [/403/, /WebSocket/] });
      await page.waitForFunction(() => document.getElementById("status").dataset.state === "refused", null, { timeout: WAIT_MS });
      assert.equal(await page.locator("#status").textContent(), "refused by the server");
      assert.match(await page.locator("#notice").textContent(), /refused this page's connection \(HTTP 403\)/);
      await page.context().close();
    } finally {
      await closePages();
      trap.close();
      await own.stop();
    }
  });

  it("behind nginx configured as the README says, on a port of its own, the page chats on both transports, and a ban by address bans the client, not the proxy", { timeout: 300000 }, async () => {
    const nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p));
    assert.ok(nginx, "nginx is missing: tests/run installs it (Debian's nginx package)");
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const block = readme.match(/```nginx\n([\s\S]*?)```/)[1];
    const key = "nginx-test-key";
    // As the README says: TRUSTED_PROXIES names the proxy (nginx here, on 127.0.0.1).
    const own = await startRelay({ store: "sqlite", env: { API_KEYS: key, TRUSTED_PROXIES: "127.0.0.1" } });
    const dir = mkdtempSync(path.join(os.tmpdir(), "relay_nginx_"));
    const port = await new Promise((resolve) => {
      const probe = http.createServer().listen(0, "127.0.0.1", () => {
        const p = probe.address().port;
        probe.close(() => resolve(p));
      });
    });
    const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `${t}_temp_path ${dir}/${t};`).join("\n");
    writeFileSync(
      path.join(dir, "nginx.conf"),
      `daemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\naccess_log off;\n${temp}\n` +
        `server {\nlisten 127.0.0.1:${port};\n` +
        block.replace("http://127.0.0.1:3000", own.url) +
        `}\n}\n`,
    );
    const proc = spawn(nginx, ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: "ignore" });
    try {
      const url = `http://127.0.0.1:${port}`;
      await until(async () => {
        try {
          return (await fetch(`${url}/healthz`)).ok;
        } catch {
          return false;
        }
      }, "nginx answering");
      for (const transports of [["polling"], ["polling", "websocket"]]) {
        const page = await openPage(`nginx ${transports}`, {
          url,
          initScript: withIo({ transports }),
        });
        await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
        const text = `through nginx on ${transports.join("+")}`;
        await type(page, text);
        await sent(page, text);
        if (transports.includes("websocket")) {
          await page.waitForFunction(() => window.__transport && window.__transport() === "websocket", null, { timeout: WAIT_MS });
        }
        await page.context().close();
      }

      // Two stock clients through nginx, from 127.0.0.2 (which writes another address into
      // X-Forwarded-For itself) and from 127.0.0.1. A ban of 127.0.0.2 ends the first and refuses
      // it again, on both transports; the second, behind the same proxy, chats on.
      const via = (localAddress, transports) =>
        io(url, {
          transports,
          // From that address on both transports (the polling requests go through the agent).
          localAddress,
          agent: new http.Agent({ localAddress }),
          extraHeaders: { "X-Forwarded-For": "203.0.113.9" },
          forceNew: true,
          reconnection: false,
          auth: { serverOffset: 0 },
        });
      const banned = via("127.0.0.2", ["websocket"]);
      const bystander = via("127.0.0.1", ["websocket"]);
      try {
        await Promise.all([banned, bystander].map((s) => withTimeout(new Promise((resolve) => s.once("connect", resolve)), PATIENCE_MS, "connect through nginx")));
        const ended = new Promise((resolve) => banned.once("disconnect", resolve));
        const ban = await fetch(`${own.url}/api/v1/bans`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ ip: "127.0.0.2", reason: "nginx test" }),
        });
        assert.equal(ban.status, 201, await ban.text());
        assert.equal(await withTimeout(ended, PATIENCE_MS, "the banned client's socket ends"), "io server disconnect");
        for (const transports of [["websocket"], ["polling"]]) {
          const again = via("127.0.0.2", transports);
          try {
            const refused = await withTimeout(new Promise((resolve) => again.once("connect_error", resolve)), PATIENCE_MS, `refused again on ${transports}`);
            assert.equal(refused.message, "banned", `on ${transports}`);
          } finally {
            again.disconnect();
          }
        }
        assert.ok(bystander.connected, "the other client behind the same proxy is not banned");
        assert.equal(await bystander.timeout(PATIENCE_MS).emitWithAck("chat message", "still here", "nginx-bystander-1"), undefined);
      } finally {
        banned.disconnect();
        bystander.disconnect();
      }
    } finally {
      await closePages();
      proc.kill();
      await own.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("no console errors, page errors or failed requests on any page", () => {
    assert.deepEqual(problems, []);
  });
});
