// The admin page (/admin, static/admin.*), in headless Chromium, driven by playwright-core,
// against the server API (/api/v1/, API_KEYS): the page asks for a key, says a wrong one is wrong
// and asks again, and keeps the right one for the tab only (sessionStorage, never localStorage),
// sending it as a bearer token with every call; rooms with their online counts, refreshed every
// 5 s and on demand; a room's newest messages (shown literally), older pages, and Delete (gone
// from the page and from the API); bans added (the server's refusals shown next to the form) and
// lifted; the layout at 320 px and on a desktop; no page errors.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startRelay, PATIENCE_MS, launchChromium, makeClient, connected, closeAll, until } from "./helpers.mjs";

// How long a page may take to show what a step waits for: a bound for a hung page, not a speed
// requirement.
const WAIT_MS = PATIENCE_MS;
const KEY = "admin-test-key";
const KEY_STORE = "relay-api-key";

describe("the admin page", () => {
  let relay;
  let browser;
  const problems = []; // page errors and console errors (not the browser's "failed to load" lines)
  const contexts = new Set();
  const sockets = [];
  const tag = randomBytes(3).toString("hex");
  let published = 0;

  before(async () => {
    relay = await startRelay({ store: "sqlite", env: { API_KEYS: KEY, MAX_MESSAGES_PER_SECOND: "0" } });
    browser = await launchChromium();
  });

  after(async () => {
    closeAll(...sockets);
    await Promise.all([...contexts].map((c) => c.close().catch(() => {})));
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  /** A call to the server API from the test: {status, body (parsed JSON or null), text}. */
  async function api(method, path, body, key = KEY) {
    const headers = { Authorization: `Bearer ${key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(`${relay.url}/api/v1/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON: the assertions show the text
    }
    return { status: res.status, body: json, text };
  }

  /** Publishes `content` (in `room`, else the main room) through the API; resolves with its id. */
  async function publish(content, { room, ...extra } = {}) {
    const r = await api("POST", "messages", { content, idempotency_key: `admin-page-${tag}-${published++}`, ...(room ? { room } : {}), ...extra });
    assert.equal(r.status, 201, `published ${JSON.stringify(content)}: ${r.status} ${r.text}`);
    return r.body.id;
  }

  async function openPage(name, { viewport = { width: 1280, height: 800 } } = {}) {
    const context = await browser.newContext({ viewport });
    contexts.add(context);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (err) => problems.push(`${name} page error: ${err.message}`));
    page.on("console", (msg) => {
      // A 401 or 404 answer is logged by the browser itself ("Failed to load resource"): expected.
      if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) problems.push(`${name} console.error: ${msg.text()}`);
    });
    await page.goto(`${relay.url}/admin`, { waitUntil: "load" });
    return page;
  }

  async function close(...pages) {
    for (const page of pages) {
      contexts.delete(page.context());
      await page.context().close();
    }
  }

  async function enterKey(page, key) {
    await page.locator("#key").fill(key);
    await page.locator("#key").press("Enter");
  }

  async function signIn(page) {
    await enterKey(page, KEY);
    await page.locator("#admin").waitFor({ state: "visible" });
  }

  const stored = (page) => page.evaluate((k) => sessionStorage.getItem(k), KEY_STORE);

  const room = (page, name) => page.locator(`#admin-rooms > li[data-room="${name}"]`);

  /** Shows `name`'s messages: waits for the room in the list (Refresh asks at once), clicks it. */
  async function openRoom(page, name) {
    await page.locator("#refresh").click();
    await room(page, name).waitFor();
    await room(page, name).locator("button").click();
    await page.waitForFunction((n) => document.querySelector(`#admin-rooms > li[data-room="${n}"] button`)?.getAttribute("aria-current") === "true", name, { timeout: WAIT_MS });
  }

  /** The message rows shown, in order: {id, text}. */
  const rows = (page) =>
    page.$$eval("#admin-messages > li", (lis) => lis.map((li) => ({ id: Number(li.dataset.id), text: li.querySelector(".content").textContent })));

  /** Waits until the rows' texts are `texts`, in order. */
  async function rowsAre(page, texts, what) {
    try {
      await page.waitForFunction(
        (want) => JSON.stringify([...document.querySelectorAll("#admin-messages > li .content")].map((p) => p.textContent)) === JSON.stringify(want),
        texts,
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch (err) {
      throw new Error(`${what}: wanted ${JSON.stringify(texts)}, shown ${JSON.stringify(await rows(page))} (${err.message})`);
    }
  }

  it("asks for a key, says a wrong one is wrong, and keeps the right one for this tab only", { timeout: 60000 }, async () => {
    const page = await openPage("key");
    const calls = [];
    page.on("request", (req) => {
      if (new URL(req.url()).pathname.startsWith("/api/v1/")) calls.push({ path: new URL(req.url()).pathname, auth: req.headers().authorization });
    });
    // No key yet: the page asks for one and shows nothing else.
    await page.locator("#key").waitFor({ state: "visible" });
    assert.equal(await page.locator("#admin").isHidden(), true, "nothing is shown without a key");
    assert.equal(await page.locator("#key").getAttribute("type"), "password", "the key is not shown on screen");
    assert.equal(await page.locator("#status").textContent(), "no key");
    assert.equal(calls.length, 0, "no call without a key");

    // A wrong key: "wrong key", and the page asks again, keeping nothing.
    await enterKey(page, "not-the-key");
    await page.waitForFunction(() => {
      const e = document.getElementById("key-error");
      return !e.hidden && /wrong key/i.test(e.textContent);
    }, null, { timeout: WAIT_MS });
    assert.match(await page.locator("#status").textContent(), /wrong key/i);
    assert.equal(await page.locator("#admin").isHidden(), true);
    assert.equal(await page.locator("#key").isVisible(), true, "the page asks again");
    assert.equal(await page.locator("#key").inputValue(), "", "the wrong key is cleared");
    assert.equal(await stored(page), null, "a wrong key is not kept");
    assert.ok(calls.length > 0 && calls.every((c) => c.auth === "Bearer not-the-key"), `the wrong key went as a bearer token: ${JSON.stringify(calls)}`);

    // The right key: the page opens, the badge says so, and the key is kept for the tab only.
    const since = calls.length;
    await signIn(page);
    assert.equal(await page.locator("#key-panel").isHidden(), true);
    assert.equal(await page.locator("#key-error").isHidden(), true, "the wrong key's message goes");
    assert.equal(await page.locator("#status").textContent(), "key ok");
    assert.equal(await stored(page), KEY);
    const local = await page.evaluate(() => Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]));
    assert.ok(!local.some(([k, v]) => k === KEY_STORE || String(v).includes(KEY)), `the key is not in localStorage: ${JSON.stringify(local)}`);
    assert.equal(await page.locator("#key").inputValue(), "", "the key does not stay in the field");

    // A reload of the tab keeps it: no question.
    await page.reload({ waitUntil: "load" });
    await page.locator("#admin").waitFor({ state: "visible" });
    assert.equal(await page.locator("#key-panel").isHidden(), true);
    // Every call since carried the key (the bans list too).
    const asked = (what) => calls.slice(since).some((c) => c.path === `/api/v1/${what}`);
    await until(() => asked("rooms") && asked("bans"), "the rooms and the bans asked for with the key");
    const later = calls.slice(since);
    assert.ok(later.every((c) => c.auth === `Bearer ${KEY}`), `every call carries the key: ${JSON.stringify(later)}`);

    // A kept key the server no longer takes (here: another key in the tab's storage): asked again.
    await page.evaluate((k) => sessionStorage.setItem(k, "revoked-key"), KEY_STORE);
    await page.reload({ waitUntil: "load" });
    await page.waitForFunction(() => /wrong key/i.test(document.getElementById("key-error").textContent), null, { timeout: WAIT_MS });
    assert.equal(await page.locator("#admin").isHidden(), true);
    assert.equal(await stored(page), null);

    // Forget key: the page locks again and the tab keeps nothing.
    await signIn(page);
    await page.locator("#forget-key").click();
    await page.locator("#key").waitFor({ state: "visible" });
    assert.equal(await page.locator("#admin").isHidden(), true);
    assert.equal(await stored(page), null);
    assert.equal(await page.locator("#admin-rooms > li").count(), 0, "nothing stays on the page");
    await close(page);
  });

  it("lists the rooms with their online counts, every 5 s and on demand, and shows a room's messages; Delete removes one", { timeout: 60000 }, async () => {
    const page = await openPage("messages");
    await signIn(page);

    // Messages published after the page opened: the 5 s refresh lists their rooms, "/" first.
    const first = await publish(`first ${tag}`);
    const markup = `<img src=x onerror="window.__pwned=1"><b>second</b> ${tag}`;
    const second = await publish(markup, { user: "u-ana", name: "Ana" });
    await publish(`in general ${tag}`, { room: "general" });
    await room(page, "general").waitFor();
    await room(page, "/").waitFor();
    const listed = await page.$$eval("#admin-rooms > li", (lis) => lis.map((li) => li.dataset.room));
    assert.deepEqual(listed.slice(0, 1), ["/"], `the main room first: ${listed}`);
    assert.match(await room(page, "/").textContent(), new RegExp(`last #${second}\\b`));
    assert.equal(await room(page, "/").locator(".room-online").textContent(), "0 online");

    // Someone comes into "/": Refresh shows it.
    const client = makeClient(relay.url);
    sockets.push(client);
    await connected(client);
    await page.locator("#refresh").click();
    await page.waitForFunction(() => document.querySelector('#admin-rooms > li[data-room="/"] .room-online')?.textContent === "1 online", null, { timeout: WAIT_MS });
    // And leaves: the next refresh (every 5 s, no click) shows that.
    closeAll(client);
    await page.waitForFunction(() => document.querySelector('#admin-rooms > li[data-room="/"] .room-online')?.textContent === "0 online", null, { timeout: WAIT_MS });

    // The main room's messages, newest first, asked for as room=%2F, the markup shown as text.
    const asked = page.waitForRequest((req) => req.url().includes("/api/v1/messages?"));
    await openRoom(page, "/");
    assert.match((await asked).url(), /[?&]room=%2F(&|$)/);
    await rowsAre(page, [markup, `first ${tag}`], "the main room");
    assert.deepEqual((await rows(page)).map((r) => r.id), [second, first]);
    assert.equal(await page.locator("#admin-messages img, #admin-messages b").count(), 0, "server text is never markup");
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.match(await page.locator(`#admin-messages > li[data-id="${second}"] .meta`).textContent(), /Ana/);
    assert.match(await page.locator("#messages-heading").textContent(), /\//);
    assert.equal(await page.locator("#older").isHidden(), true, "no older page");

    // Delete the first: one tap only arms it (rows move under a finger as the list refreshes),
    // nothing is sent; the second deletes. Its row goes, and the API no longer has it.
    const deleteButton = page.locator(`#admin-messages > li[data-id="${first}"] button.delete`);
    let sent = 0;
    const countDeletes = (req) => { if (req.method() === "DELETE") sent++; };
    page.on("request", countDeletes);
    await deleteButton.click();
    assert.equal(await deleteButton.textContent(), `Delete #${first}?`);
    assert.match(await page.locator(`#admin-messages > li[data-id="${first}"]`).getAttribute("class"), /armed/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sent, 0, "one tap sends nothing");
    page.off("request", countDeletes);
    const deleted = page.waitForResponse((res) => res.request().method() === "DELETE" && res.url().endsWith(`/api/v1/messages/${first}`));
    await deleteButton.click();
    assert.equal((await deleted).status(), 200);
    await page.locator(`#admin-messages > li[data-id="${first}"]`).waitFor({ state: "detached" });
    const history = await api("GET", "messages?room=%2F&limit=50");
    assert.equal(history.status, 200, history.text);
    const ids = history.body.messages.map((m) => m.id);
    assert.ok(!ids.includes(first), `the deleted message is gone from the API: ${ids}`);
    assert.ok(ids.includes(second), `the other one stays: ${ids}`);

    // A refresh brings a newer message to the top, and not the deleted one back.
    await publish(`third ${tag}`);
    await page.locator("#refresh").click();
    await rowsAre(page, [`third ${tag}`, markup], "after a delete and a new message");

    assert.equal(await page.locator("#messages-error").isHidden(), true);
    await close(page);
  });

  it("pages back through a room's older messages", { timeout: 60000 }, async () => {
    const sent = [];
    for (let i = 0; i < 55; i++) {
      sent.push(await publish(`page ${i} ${tag}`, { room: "paging" }));
    }
    const page = await openPage("paging");
    await signIn(page);
    await openRoom(page, "paging");
    const newest = sent.map((_, i) => `page ${i} ${tag}`).reverse();
    await rowsAre(page, newest.slice(0, 50), "the newest page");
    await page.locator("#older").waitFor({ state: "visible" });
    const older = page.waitForRequest((req) => req.url().includes("/api/v1/messages?") && req.url().includes("before="));
    await page.locator("#older").click();
    assert.match((await older).url(), new RegExp(`[?&]before=${sent[5]}(&|$)`), "the answer's `before` is asked for");
    await rowsAre(page, newest, "all 55, in order, once");
    assert.deepEqual((await rows(page)).map((r) => r.id), [...sent].reverse());
    await page.locator("#older").waitFor({ state: "hidden" });
    await close(page);
  });

  it("adds a ban, shows the server's refusals next to the form, and lifts it", { timeout: 60000 }, async () => {
    const page = await openPage("bans");
    await signIn(page);
    const posts = [];
    page.on("request", (req) => {
      if (req.method() === "POST" && req.url().endsWith("/api/v1/bans")) posts.push(req.postDataJSON());
    });

    // Neither a user nor an IP: the page says so and sends nothing.
    await page.locator("#ban-reason").fill("nothing to ban");
    await page.locator("#ban-submit").click();
    await page.locator("#ban-error").waitFor({ state: "visible" });
    assert.match(await page.locator("#ban-error").textContent(), /user|IP/);
    assert.equal(posts.length, 0);

    // What the server refuses: its reason, next to the form.
    const refused = await api("POST", "bans", { ip: "not-an-ip" });
    assert.ok(refused.status >= 400 && refused.status < 500, `refused: ${refused.status} ${refused.text}`);
    assert.equal(typeof refused.body?.error, "string", refused.text);
    await page.locator("#ban-ip").fill("not-an-ip");
    await page.locator("#ban-submit").click();
    await page.waitForFunction((why) => document.getElementById("ban-error").textContent.includes(why), refused.body.error, { timeout: WAIT_MS });
    assert.equal(await page.locator("#admin-bans > li").count(), 0, "nothing banned");

    // A ban for user "spammer", for an hour, with its reason: listed here and by the API.
    await page.locator("#ban-ip").fill("");
    await page.locator("#ban-user").fill("spammer");
    await page.locator("#ban-seconds").selectOption("3600");
    await page.locator("#ban-reason").fill("posting links");
    const created = page.waitForResponse((res) => res.request().method() === "POST" && res.url().endsWith("/api/v1/bans"));
    await page.locator("#ban-submit").click();
    assert.equal((await created).status(), 201);
    assert.deepEqual(posts.at(-1), { user: "spammer", seconds: 3600, reason: "posting links" });
    const row = page.locator('#admin-bans > li[data-user="spammer"]');
    await row.waitFor();
    assert.match(await row.textContent(), /posting links/);
    assert.match(await row.textContent(), /until/, "a ban for an hour says until when");
    assert.equal(await page.locator("#ban-error").isHidden(), true, "the refusal's message goes");
    assert.equal(await page.locator("#ban-user").inputValue(), "", "the form is cleared");
    const listed = await api("GET", "bans");
    assert.equal(listed.status, 200, listed.text);
    const ban = listed.body.bans.find((b) => b.user === "spammer");
    assert.ok(ban, `the API lists the ban: ${listed.text}`);
    assert.equal(ban.reason, "posting links");
    assert.equal(await row.getAttribute("data-id"), String(ban.id));
    assert.ok(typeof ban.expires_at === "number" && Math.abs(ban.expires_at - ban.created_at - 3600000) < 120000, `an hour: ${listed.text}`);

    // A ban that never expires says so.
    await page.locator("#ban-ip").fill("10.0.0.0/8");
    await page.locator("#ban-seconds").selectOption("");
    await page.locator("#ban-submit").click();
    const forever = page.locator('#admin-bans > li[data-ip="10.0.0.0/8"]');
    await forever.waitFor();
    assert.match(await forever.textContent(), /never/);
    assert.deepEqual(posts.at(-1), { ip: "10.0.0.0/8" });

    // Lift the user's ban: gone here and from the API; the other stays.
    const lifted = page.waitForResponse((res) => res.request().method() === "DELETE" && res.url().endsWith(`/api/v1/bans/${ban.id}`));
    await row.locator("button.lift").click();
    assert.equal(await row.locator("button.lift").textContent(), `Lift ban ${ban.id}?`);
    await row.locator("button.lift").click();
    assert.equal((await lifted).status(), 200);
    await row.waitFor({ state: "detached" });
    const after = await api("GET", "bans");
    assert.ok(!after.body.bans.some((b) => b.id === ban.id), `the API no longer lists it: ${after.text}`);
    assert.equal(await forever.count(), 1);
    // The next refresh does not bring it back.
    const refreshed = page.waitForResponse((res) => res.url().endsWith("/api/v1/bans") && res.request().method() === "GET");
    await page.locator("#refresh").click();
    await refreshed;
    await page.waitForTimeout(100);
    assert.equal(await row.count(), 0);
    const other = after.body.bans.find((b) => b.ip === "10.0.0.0/8");
    assert.equal((await api("DELETE", `bans/${other.id}`)).status, 200);
    await close(page);
  });

  it("fits a 320 px phone and a desktop", { timeout: 60000 }, async () => {
    await publish("x".repeat(400), { room: "layout", user: "u".repeat(128), name: "N".repeat(64) });
    await publish(`short ${tag}`, { room: "layout" });
    const ban = await api("POST", "bans", { user: "w".repeat(100), reason: "r".repeat(150), seconds: 600 });
    assert.equal(ban.status, 201, ban.text);
    try {
      for (const width of [320, 1280]) {
        const page = await openPage(`layout ${width}`, { viewport: { width, height: 700 } });
        const fits = () =>
          page.evaluate(() => {
            const w = window.innerWidth;
            const out = [...document.body.querySelectorAll("*")]
              .filter((el) => {
                const r = el.getBoundingClientRect();
                return r.width > 0 && (r.left < -0.5 || r.right > w + 0.5);
              })
              .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}: ${JSON.stringify(el.getBoundingClientRect().toJSON())}`);
            return { scrollWidth: document.documentElement.scrollWidth, width: w, out };
          });
        // Asking for the key.
        await page.locator("#key").waitFor({ state: "visible" });
        let g = await fits();
        assert.ok(g.scrollWidth <= g.width, `${width} px, the key form: the page scrolls sideways (${g.scrollWidth} px)`);
        assert.deepEqual(g.out, [], `${width} px, the key form: off the screen`);
        // Everything shown, with long names, text and reasons.
        await signIn(page);
        await openRoom(page, "layout");
        await rowsAre(page, [`short ${tag}`, "x".repeat(400)], "the layout room");
        await page.locator(`#admin-bans > li[data-id="${ban.body.id}"]`).waitFor();
        g = await fits();
        assert.ok(g.scrollWidth <= g.width, `${width} px: the page scrolls sideways (${g.scrollWidth} px)`);
        assert.deepEqual(g.out, [], `${width} px: off the screen`);
        const box = (sel) => page.locator(sel).evaluate((el) => el.getBoundingClientRect().toJSON());
        const [roomsBox, messagesBox, bansBox, button] = [await box("#rooms-panel"), await box("#messages-panel"), await box("#bans-panel"), await box("#admin-messages > li:first-child button.delete")];
        assert.ok(button.width >= 40 && button.height >= 20, `${width} px: Delete is big enough to hit: ${JSON.stringify(button)}`);
        if (width >= 1000) {
          assert.ok(roomsBox.right <= messagesBox.left && messagesBox.right <= bansBox.left, `${width} px: the panels side by side`);
        } else {
          assert.ok(roomsBox.bottom <= messagesBox.top && messagesBox.bottom <= bansBox.top, `${width} px: the panels one above the other`);
        }
        await close(page);
      }
    } finally {
      await api("DELETE", `bans/${ban.body?.id}`);
    }
  });

  it("a message deleted from /admin leaves the chat page that shows it", { timeout: 60000 }, async () => {
    const room = `chat-${tag}`;
    const keep = await publish("this one stays", { room });
    const spam = await publish("buy cheap stuff", { room });
    const context = await browser.newContext({ viewport: { width: 390, height: 700 } });
    contexts.add(context);
    const chat = await context.newPage();
    chat.setDefaultTimeout(WAIT_MS);
    chat.on("pageerror", (err) => problems.push(`chat page error: ${err.message}`));
    await chat.goto(`${relay.url}/#${room}`, { waitUntil: "load" });
    const shown = () => chat.$$eval("#messages > li[data-id]", (lis) => lis.map((li) => Number(li.dataset.id)));
    await chat.waitForFunction((n) => document.querySelectorAll("#messages > li[data-id]").length === n, 2, { timeout: WAIT_MS });
    assert.deepEqual(await shown(), [keep, spam]);
    const admin = await openPage("admin for the chat");
    await signIn(admin);
    await openRoom(admin, room);
    await rowsAre(admin, ["buy cheap stuff", "this one stays"], "the room's messages");
    await admin.locator(`#admin-messages > li[data-id="${spam}"] button`).click();
    await admin.locator(`#admin-messages > li[data-id="${spam}"] button`).click();
    await rowsAre(admin, ["this one stays"], "after the delete");
    await chat.waitForFunction((id) => !document.querySelector(`#messages > li[data-id="${id}"]`), spam, { timeout: WAIT_MS });
    assert.deepEqual(await shown(), [keep]);
    // A reload does not bring it back.
    await chat.reload({ waitUntil: "load" });
    await chat.waitForFunction((n) => document.querySelectorAll("#messages > li[data-id]").length === n, 1, { timeout: WAIT_MS });
    assert.deepEqual(await shown(), [keep]);
    await close(admin, chat);
  });

  it("a chat page a ban ends says so, and Connect then says it is banned", { timeout: 60000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 700 } });
    contexts.add(context);
    const chat = await context.newPage();
    chat.setDefaultTimeout(WAIT_MS);
    chat.on("pageerror", (err) => problems.push(`banned chat page error: ${err.message}`));
    await chat.goto(`${relay.url}/`, { waitUntil: "load" });
    const status = () => chat.locator("#status").textContent();
    await chat.waitForFunction(() => document.getElementById("status").dataset.state === "connected", null, { timeout: WAIT_MS });
    const ban = await api("POST", "bans", { ip: "127.0.0.0/8", seconds: 60, reason: "page test" });
    assert.equal(ban.status, 201, ban.text);
    try {
      await chat.waitForFunction(() => document.getElementById("status").textContent === "ended by the server", null, { timeout: WAIT_MS });
      assert.match(await chat.locator("#notice").textContent(), /ended your connection/);
      assert.equal(await chat.locator("#toggle-btn").textContent(), "Connect", "the button says what a click does");
      await chat.locator("#toggle-btn").click();
      await chat.waitForFunction(() => document.getElementById("status").textContent === "banned", null, { timeout: WAIT_MS });
      assert.match(await chat.locator("#notice").textContent(), /banned/);
      assert.equal(await status(), "banned");
    } finally {
      await api("DELETE", `bans/${ban.body?.id}`);
    }
    await close(chat);
  });

  it("no page errors", () => {
    assert.deepEqual(problems, []);
  });
});
