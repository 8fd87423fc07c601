// People on the chat page (static/), in headless Chromium, driven by playwright-core: every
// message shows its author's name and time (drawn from the row's attributes, so the row's text
// stays the message); a guest name ("Your name") kept across reloads and sent as auth.name; own
// messages marked, and still marked after a reload; a name the server refuses shows its reason; a
// token from the URL (?token=) and a fresh one handed in with window.relay.setToken; who is here
// (presence) and who is typing.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startRelay, PATIENCE_MS, launchChromium } from "./helpers.mjs";

const WAIT_MS = PATIENCE_MS;
const SECRET = "people-page-test-secret";

/** An HS256 JWT for `claims`, signed with SECRET. */
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

describe("people on the chat page", () => {
  let relay;
  let browser;
  const problems = [];
  const contexts = new Set();

  before(async () => {
    relay = await startRelay({ store: "sqlite", env: { MAX_MESSAGES_PER_SECOND: "0" } });
    browser = await launchChromium();
  });

  after(async () => {
    await Promise.all([...contexts].map((c) => c.close().catch(() => {})));
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  async function openPage(name, { url = relay.url, path = "/", viewport } = {}) {
    const context = await browser.newContext(viewport ? { viewport } : {});
    contexts.add(context);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (err) => problems.push(`${name} page error: ${err.message}`));
    await page.goto(`${url}${path}`, { waitUntil: "load" });
    return page;
  }

  async function close(...pages) {
    for (const page of pages) {
      contexts.delete(page.context());
      await page.context().close();
    }
  }

  const state = (page) => page.evaluate(() => document.getElementById("status").dataset.state);

  async function connected(page) {
    await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
  }

  async function setName(page, name) {
    await page.locator("#name").fill(name);
    await page.locator("#name").press("Enter");
  }

  async function type(page, text) {
    await page.locator("#input").fill(text);
    await page.locator("#input").press("Enter");
    await page.waitForFunction(() => document.getElementById("input").value === "", null, { timeout: WAIT_MS });
  }

  /**
   * What the server's row with `text` shows, once it holds what `ready` asks: "sent" (acked and
   * marked own), "own" (marked own), "named" (has a name), or "" (there).
   */
  async function row(page, text, ready = "") {
    const handle = await page.waitForFunction(
      ([t, r]) => {
        const li = [...document.querySelectorAll("#messages > li")].find((el) => el.textContent === t && el.dataset.id);
        if (!li) return null;
        const own = li.hasAttribute("data-own");
        const ok = r === "sent" ? own && li.dataset.state === "sent" : r === "own" ? own : r === "named" ? Boolean(li.dataset.name) : true;
        return ok ? li : null;
      },
      [text, ready],
      { timeout: WAIT_MS, polling: 50 },
    );
    return handle.evaluate((li) => ({
      text: li.textContent,
      name: li.dataset.name ?? null,
      time: li.dataset.time ?? null,
      at: Number(li.dataset.at),
      title: li.title,
      own: li.hasAttribute("data-own"),
      drawn: getComputedStyle(li, "::before").content,
      localTime: (() => {
        const d = new Date(Number(li.dataset.at));
        return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
      })(),
    }));
  }

  it("two guests see each other's names and times, their own messages marked, across reloads", { timeout: 240000 }, async () => {
    const ana = await openPage("ana");
    const bo = await openPage("bo");
    await Promise.all([connected(ana), connected(bo)]);
    await setName(ana, "  Ana  ");
    await setName(bo, "Bo");
    assert.equal(await ana.locator("#name").inputValue(), "Ana", "the name is trimmed");
    await Promise.all([connected(ana), connected(bo)]);

    const before = Date.now();
    await type(ana, "hello from Ana");
    await row(bo, "hello from Ana");
    await type(bo, "hi from Bo");
    for (const page of [ana, bo]) {
      const mine = page === ana ? "hello from Ana" : "hi from Bo";
      const theirs = page === ana ? "hi from Bo" : "hello from Ana";
      const own = await row(page, mine, "sent");
      const other = await row(page, theirs);
      assert.equal(own.text, mine, "the row's text is the message alone");
      assert.equal(own.name, page === ana ? "Ana" : "Bo");
      assert.equal(other.name, page === ana ? "Bo" : "Ana");
      assert.equal(other.own, false, "another's message is not marked own");
      for (const r of [own, other]) {
        assert.ok(r.at >= before - 60000 && r.at <= Date.now() + 60000, `the server's time: ${r.at}`);
        assert.match(r.time, /^\d\d:\d\d$/);
        assert.equal(r.time, r.localTime, "the time is local HH:MM");
        assert.ok(r.title.length > 5, "the full date is in the title");
        assert.ok(r.drawn.includes(r.name) && r.drawn.includes(r.time), `name and time are drawn: ${r.drawn}`);
      }
    }

    // After a reload: the name is kept, and own messages are still marked.
    await ana.reload({ waitUntil: "load" });
    await connected(ana);
    assert.equal(await ana.locator("#name").inputValue(), "Ana");
    const own = await row(ana, "hello from Ana", "own");
    assert.equal(own.name, "Ana");
    const other = await row(ana, "hi from Bo", "named");
    assert.equal(other.own, false);
    assert.equal(other.name, "Bo");

    // A new message after the reload carries the kept name.
    await type(ana, "after the reload");
    assert.equal((await row(bo, "after the reload", "named")).name, "Ana");
    assert.equal((await row(ana, "after the reload", "own")).name, "Ana");

    // A message from a guest with no name says "guest".
    const anon = await openPage("anon");
    await connected(anon);
    await type(anon, "no name here");
    assert.equal((await row(ana, "no name here", "named")).name, "guest");
    assert.equal((await row(anon, "no name here", "own")).name, "guest");
    await close(ana, bo, anon);
  });

  it("a name the server refuses shows its reason, and a good one connects", { timeout: 180000 }, async () => {
    const page = await openPage("bad name");
    await connected(page);
    assert.equal(await page.locator("#name").getAttribute("maxlength"), "32", "the input keeps names short");
    // A zero-width character is not something the input can stop: the server refuses it.
    await page.evaluate(() => localStorage.setItem("relay-name", "Bo\u200bb"));
    await page.reload({ waitUntil: "load" });
    await page.waitForFunction(() => document.getElementById("status").dataset.state === "refused", null, { timeout: WAIT_MS });
    const notice = await page.locator("#notice").textContent();
    assert.match(notice, /invalid name: /, `the notice gives the server's reason: ${notice}`);
    assert.equal(await page.locator("#name").getAttribute("aria-invalid"), "true");
    await setName(page, "Cy");
    await connected(page);
    assert.equal(await page.locator("#notice").isHidden(), true, "the refusal's notice goes");
    assert.equal(await page.evaluate(() => localStorage.getItem("relay-name")), "Cy");
    await type(page, "fixed my name");
    assert.equal((await row(page, "fixed my name", "own")).name, "Cy");
    await close(page);
  });

  it("the name field fits on a phone", { timeout: 120000 }, async () => {
    for (const width of [320, 1280]) {
      const page = await openPage(`layout ${width}`, { viewport: { width, height: 700 } });
      await connected(page);
      const g = await page.evaluate(() => {
        const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
        return { name: box("name"), bar: box("bar"), toggle: box("toggle-btn"), status: box("status"), scrollWidth: document.documentElement.scrollWidth };
      });
      assert.ok(g.scrollWidth <= width, `${width} px: the page scrolls sideways`);
      for (const [n, b] of Object.entries({ name: g.name, toggle: g.toggle, status: g.status })) {
        assert.ok(b.left >= 0 && b.right <= width && b.width > 0, `${width} px: ${n} runs off the screen: ${JSON.stringify(b)}`);
        assert.ok(b.top >= g.bar.top && b.bottom <= g.bar.bottom, `${width} px: ${n} is in the top bar`);
      }
      assert.ok(g.name.width >= 60, `${width} px: the name field is ${g.name.width} px wide`);
      await close(page);
    }
  });

  it("a token from the URL, its expiry noticed, and a fresh one from the host page", { timeout: 180000 }, async () => {
    const own = await startRelay({ store: "sqlite", env: { AUTH: "token", JWT_SECRET: SECRET, MAX_MESSAGES_PER_SECOND: "0" } });
    try {
      // No token: the server says why.
      const none = await openPage("no token", { url: own.url });
      await none.waitForFunction(() => document.getElementById("status").dataset.state === "refused", null, { timeout: WAIT_MS });
      assert.match(await none.locator("#notice").textContent(), /token required/);
      await close(none);

      const now = Math.floor(Date.now() / 1000);
      const short = jwt({ sub: "u-dee", name: "Dee", exp: now + 2 });
      const page = await openPage("token", { url: own.url, path: `/?token=${short}` });
      await connected(page);
      await type(page, "signed in");
      assert.equal((await row(page, "signed in", "own")).name, "Dee");

      // exp + the server's 5 s leeway: the page says the sign-in expired.
      await page.waitForFunction(() => /expired/.test(document.getElementById("notice").textContent), null, { timeout: WAIT_MS });
      await page.waitForFunction(() => document.getElementById("status").dataset.state !== "connected", null, { timeout: WAIT_MS });

      // The host page hands in a fresh token: the room connects again.
      const fresh = jwt({ sub: "u-dee", name: "Dee", exp: now + 3600 });
      await page.evaluate((t) => window.relay.setToken(t), fresh);
      await connected(page);

      // Connected with a token: a newer one is sent in-band, answered with its exp.
      const newer = jwt({ sub: "u-dee", name: "Dee", exp: now + 7200 });
      const results = await page.evaluate((t) => window.relay.setToken(t), newer);
      assert.deepEqual(results, [{ room: "/", exp: now + 7200 }]);
      assert.equal(await state(page), "connected");
      await type(page, "still here");
      assert.equal((await row(page, "still here", "own")).name, "Dee");
      // The token left the address bar (a copied link does not carry it); a reload signs in
      // with the newest one, kept for the tab.
      assert.ok(!page.url().includes("token="), `no token in the address bar: ${page.url()}`);
      await page.reload({ waitUntil: "load" });
      await connected(page);
      await type(page, "after a reload");
      assert.equal((await row(page, "after a reload", "own")).name, "Dee");
      await close(page);
    } finally {
      await own.stop();
    }
  });

  it("asks its host for a new token a minute before expiry and takes one by message", { timeout: 120000 }, async () => {
    const own = await startRelay({ store: "sqlite", env: { AUTH: "token", JWT_SECRET: SECRET, MAX_MESSAGES_PER_SECOND: "0" } });
    try {
      const now = Math.floor(Date.now() / 1000);
      // Less than a minute left: the page asks at once.
      const first = jwt({ sub: "u-eve", name: "Eve", exp: now + 8 });
      const context = await browser.newContext();
      contexts.add(context);
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT_MS);
      page.on("pageerror", (err) => problems.push(`expiring page error: ${err.message}`));
      await page.addInitScript(() => {
        window.__asked = new Promise((resolve) => window.addEventListener("relay:token-expiring", (e) => resolve(e.detail.exp), { once: true }));
      });
      await page.goto(`${own.url}/?token=${first}`, { waitUntil: "load" });
      await connected(page);
      assert.equal(await page.evaluate(() => window.__asked), now + 8, "asked about the token in use");
      // The host page answers by message; the page refreshes in-band and stays connected.
      const next = jwt({ sub: "u-eve", name: "Eve", exp: now + 3600 });
      await page.evaluate((t) => window.postMessage({ type: "relay:set-token", token: t }, "*"), next);
      await type(page, "still signed in");
      assert.equal((await row(page, "still signed in", "own")).name, "Eve");
      // Past the first token's expiry and its leeway, the socket lives on the new one.
      await page.waitForTimeout(Math.max(0, (now + 8 + 7) * 1000 - Date.now()));
      assert.equal(await state(page), "connected");
      assert.equal(await page.locator("#notice").isHidden(), true, "no expiry notice");
      await close(page);
    } finally {
      await own.stop();
    }
  });

  it("shows who is here and who is typing, and who left", { timeout: 120000 }, async () => {
    const ana = await openPage("ana", { path: "/#lounge" });
    const bo = await openPage("bo", { path: "/#lounge" });
    await Promise.all([connected(ana), connected(bo)]);
    await setName(ana, "Ana");
    await setName(bo, "Bo");
    await Promise.all([connected(ana), connected(bo)]);
    const online = (page, n) =>
      page.waitForFunction((want) => {
        const b = document.getElementById("online");
        return !b.hidden && b.textContent === `${want} online` && b.getAttribute("aria-label") === `${want} people here`.replace(/^1 people/, "1 person");
      }, n, { timeout: WAIT_MS });
    await Promise.all([online(ana, 2), online(bo, 2)]);

    // A click lists who is here, guests said to be guests.
    await ana.locator("#online").click();
    await ana.waitForFunction(() => {
      const names = [...document.querySelectorAll("#people-list > li")].map((li) => li.textContent);
      return names.join(",") === "Ana,Bo";
    }, null, { timeout: WAIT_MS });
    assert.equal(await ana.locator("#online").getAttribute("aria-expanded"), "true");
    const guest = await ana.evaluate(() => getComputedStyle(document.querySelector("#people-list > li"), "::after").content);
    assert.match(guest, /guest/);
    await ana.keyboard.press("Escape");
    assert.equal(await ana.locator("#people").isHidden(), true);

    // Bo types (not sent): Ana sees it, Bo does not see himself.
    await bo.locator("#input").fill("hel");
    await ana.waitForFunction(() => {
      const t = document.getElementById("typing");
      return !t.hidden && t.textContent === "Bo is typing\u2026";
    }, null, { timeout: WAIT_MS });
    assert.equal(await bo.locator("#typing").isHidden(), true, "never your own typing");
    // It fades once Bo stops.
    await ana.waitForFunction(() => document.getElementById("typing").hidden, null, { timeout: WAIT_MS });

    // Bo leaves: Ana's count follows.
    await close(bo);
    await online(ana, 1);
    await close(ana);
  });

  it("no page errors", () => {
    assert.deepEqual(problems, []);
  });
});
