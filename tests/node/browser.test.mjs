// The chat page (static/) in headless Chromium, driven by playwright-core.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { startRelay, withTimeout } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT_MS = 8000;

describe("chat page in Chromium", () => {
  let relay;
  let browser;
  const problems = []; // console errors and page errors, from every page

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM_PATH`);
    }
    // Out of the box: no DATABASE_URL, so relay's default SQLite file in its working directory.
    relay = await startRelay({ store: "default" });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
      ],
      timeout: 30000,
    });
  });

  after(async () => {
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  async function openPage(name, { url = relay.url, initScript } = {}) {
    const context = await browser.newContext();
    if (initScript) await context.addInitScript(initScript);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push(`${name} console.error: ${msg.text()} (${JSON.stringify(msg.location())})`);
    });
    page.on("pageerror", (err) => problems.push(`${name} page error: ${err.message}`));
    page.on("requestfailed", (req) => {
      // a WebSocket closed on purpose is not a failed request; anything else is worth knowing
      problems.push(`${name} request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`);
    });
    page.on("response", (res) => {
      if (res.status() >= 400) problems.push(`${name} HTTP ${res.status()} for ${res.url()}`);
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

  it("page structure and assets", { timeout: 30000 }, async () => {
    const page = await openPage("structure");
    assert.equal(await page.locator("ul#messages").count(), 1);
    assert.equal(await page.locator("form#form input#input").getAttribute("autocomplete"), "off");
    assert.equal(await page.locator("form#form button#toggle-btn").textContent(), "Disconnect");
    assert.equal(await page.locator('link[rel="icon"]').getAttribute("href"), "/favicon.svg");
    assert.ok(await page.locator('meta[name="viewport"]').count(), "viewport meta missing");
    const hasIo = await page.evaluate(() => typeof window.io === "function");
    assert.ok(hasIo, "window.io missing: /socket.io/socket.io.js did not load");
    const bg = await page.evaluate(() => getComputedStyle(document.getElementById("form")).position);
    assert.equal(bg, "fixed", "the form should be fixed at the bottom");
    await page.context().close();
  });

  it("two pages chat live, catch up after Connect, keep history on reload, render text literally", { timeout: 45000 }, async () => {
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

    await withTimeout(Promise.all([p1.context().close(), p2.context().close()]), 10000, "closing pages");
  });

  it("a long history renders completely, in order, in batches", { timeout: 60000 }, async () => {
    // Its own server, without the per-connection rate limit, so one client can store 3,000 fast.
    const bulkRelay = await startRelay({ env: { MAX_MESSAGES_PER_SECOND: "0" } });
    try {
      const { io } = await import("socket.io-client");
      const sender = io(bulkRelay.url, { transports: ["websocket"], forceNew: true });
      const run = Math.random().toString(36).slice(2);
      for (let i = 0; i < 3000; i += 100) {
        const acks = await Promise.all(
          Array.from({ length: 100 }, (_, k) =>
            sender.timeout(10000).emitWithAck("chat message", `bulk ${i + k}`, `${run}-${i + k}`),
          ),
        );
        assert.ok(acks.every((a) => a === undefined), `stored without error: ${JSON.stringify(acks.find(Boolean))}`);
      }
      sender.disconnect();
      // Count how often the list changes: batching means far fewer appends than messages.
      const countAppends = () => {
        window.__appends = 0;
        new MutationObserver((records) => {
          for (const r of records) if (r.target.id === "messages") window.__appends += 1;
        }).observe(document, { childList: true, subtree: true });
      };
      const page = await openPage("long history", { url: bulkRelay.url, initScript: countAppends });
      await page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 3000, null, { timeout: 20000 });
      const texts = await items(page);
      assert.deepEqual(texts, Array.from({ length: 3000 }, (_, i) => `bulk ${i}`));
      const appends = await page.evaluate(() => window.__appends);
      assert.ok(appends > 0 && appends < 300, `3,000 messages rendered in ${appends} appends`);
      await page.context().close();
    } finally {
      await bulkRelay.stop();
    }
  });

  it("no console errors, page errors or failed requests on any page", () => {
    assert.deepEqual(problems, []);
  });
});
