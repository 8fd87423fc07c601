// The stock socket.io-client on HTTP long-polling: with its default options (polling first, then
// the upgrade to WebSocket), with polling only, and offering WebSocket subprotocols. The chat's
// promises hold on each, and across the upgrade while messages flow.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { makeClient, connected, collect, emitAck, newOffset, mysqlExec, relayFixture } from "./helpers.mjs";

/** A stock client as a page creates it: the stock client's transports (polling, then WebSocket) unless `transports` is given. */
const stockClient = (url, opts = {}) => makeClient(url, { transports: ["polling", "websocket"], ...opts });

const TRANSPORTS = [
  ["default options (polling, then WebSocket)", {}],
  ["polling only", { transports: ["polling"] }],
  // The stock client's `protocols` option offers WebSocket subprotocols: a server that answers
  // none fails the WebSocket (the upgrade, or every connection when WebSocket is the only one).
  ["default options with a WebSocket subprotocol (protocols)", { protocols: ["chat", "v2"] }],
  ["WebSocket only, with a subprotocol", { transports: ["websocket"], protocols: ["chat"] }],
];

for (const [label, transportOpts] of TRANSPORTS) {
  describe(`stock client, ${label}`, () => {
    const { relay, sockets } = relayFixture();

    async function client(name, opts = {}) {
      const socket = stockClient(relay.url, { ...transportOpts, ...opts });
      sockets.push(socket);
      const c = collect(socket, name);
      await connected(socket, 10000, name);
      return c;
    }

    it("connects on the expected transport", async () => {
      const c = await client("transport");
      const engine = c.socket.io.engine;
      if (transportOpts.transports) {
        assert.equal(engine.transport.name, transportOpts.transports[0]);
      } else {
        // The upgrade happens right after the connection: wait for it.
        if (engine.transport.name !== "websocket") {
          await new Promise((resolve) => engine.once("upgrade", resolve));
        }
        assert.equal(engine.transport.name, "websocket");
      }
    });

    it("sends, acks after the commit, and never stores a retried offset twice", async () => {
      const a = await client("a");
      const b = await client("b");
      const offset = newOffset("dedupe");
      const text = `hello ${offset}`;
      assert.deepEqual(await emitAck(a.socket, ["chat message", text, offset]), [null]);
      assert.deepEqual(await emitAck(a.socket, ["chat message", text, offset]), [null]);
      await b.waitForText(text);
      await a.waitForText(text);
      // A barrier: the retry was not broadcast.
      const after = `after ${newOffset("b")}`;
      assert.deepEqual(await emitAck(b.socket, ["chat message", after, newOffset("b")]), [null]);
      await a.waitForText(after);
      assert.equal(a.messages.filter((m) => m.msg === text).length, 1);
      const rows = await mysqlExec(`SELECT COUNT(*) FROM \`${relay.dbName}\`.messages WHERE content = '${text}'`);
      assert.equal(rows.trim(), "1");
    });

    it("refuses bad input with an error ack and keeps the connection", async () => {
      const c = await client("bad");
      const ack = await emitAck(c.socket, ["chat message", 42, newOffset("bad")]);
      assert.deepEqual(ack, [null, { error: "message must be a string" }]);
      assert.equal(c.socket.connected, true);
    });

    it("replays exactly what follows serverOffset, then live", async () => {
      const w = await client("writer");
      const texts = [];
      for (let i = 0; i < 3; i++) {
        const text = `replay ${i} ${newOffset("r")}`;
        texts.push(text);
        await emitAck(w.socket, ["chat message", text, newOffset("w")]);
      }
      await w.waitForText(texts[2]);
      const first = w.messages.find((m) => m.msg === texts[0]).id;
      const r = await client("reader", { serverOffset: first });
      await r.waitForText(texts[2]);
      assert.deepEqual(
        r.messages.map((m) => m.msg),
        texts.slice(1),
      );
      const live = `live ${newOffset("l")}`;
      await emitAck(w.socket, ["chat message", live, newOffset("w")]);
      await r.waitForText(live);
    });

    it("10 concurrent senders: every client sees the same strictly increasing sequence", async () => {
      const senders = await Promise.all(Array.from({ length: 10 }, (_, i) => client(`s${i}`)));
      const watcher = await client("watcher");
      const start = watcher.messages.length;
      const tag = newOffset("burst");
      await Promise.all(
        senders.map(async (s, i) => {
          for (let k = 0; k < 10; k++) {
            const ack = await emitAck(s.socket, ["chat message", `${tag} ${i}-${k}`, newOffset(`s${i}`)], { ms: 15000 });
            assert.deepEqual(ack, [null]);
          }
        }),
      );
      const ours = (c) => c.messages.filter((m) => m.msg.startsWith(tag));
      for (const c of [watcher, ...senders]) {
        await c.waitUntil((m) => m.filter((e) => e.msg.startsWith(tag)).length >= 100, "all 100 burst messages", 15000);
      }
      const sequence = ours(watcher).map((m) => m.id);
      assert.equal(sequence.length, 100);
      for (let i = 1; i < sequence.length; i++) assert.ok(sequence[i] > sequence[i - 1], `ids increase: ${sequence}`);
      for (const c of senders) assert.deepEqual(ours(c).map((m) => m.id), sequence, c.name);
      // Everything the watcher got after joining is gap-free against the table.
      const ids = (await mysqlExec(`SELECT id FROM \`${relay.dbName}\`.messages ORDER BY id`)).trim().split("\n").map(Number);
      const seen = watcher.messages.slice(start).map((m) => m.id);
      assert.deepEqual(seen, ids.filter((id) => id >= seen[0]));
    });
  });
}

describe("the upgrade under traffic", () => {
  const { relay, sockets } = relayFixture();

  it("20 default clients upgrade while 5 senders send: each sees the whole table, in order, once", async () => {
    const senders = [];
    for (let i = 0; i < 5; i++) {
      const socket = stockClient(relay.url, { transports: ["websocket"] });
      sockets.push(socket);
      await connected(socket, 10000, `sender ${i}`);
      senders.push(socket);
    }
    let sending = true;
    let sent = 0;
    const loops = senders.map(async (socket, i) => {
      while (sending) {
        const ack = await emitAck(socket, ["chat message", `traffic ${i} ${sent++}`, newOffset(`t${i}`)], { ms: 15000 });
        assert.deepEqual(ack, [null]);
      }
    });
    const clients = [];
    for (let i = 0; i < 20; i++) {
      const socket = stockClient(relay.url);
      sockets.push(socket);
      clients.push(collect(socket, `upgrader ${i}`));
    }
    await Promise.all(clients.map((c) => connected(c.socket, 15000, c.name)));
    await Promise.all(
      clients.map((c) =>
        c.socket.io.engine.transport.name === "websocket"
          ? null
          : new Promise((resolve) => c.socket.io.engine.once("upgrade", resolve)),
      ),
    );
    // Some more traffic on the WebSockets, then stop.
    const target = sent + 50;
    while (sent < target) await new Promise((r) => setTimeout(r, 20));
    sending = false;
    await Promise.all(loops);
    const ids = (await mysqlExec(`SELECT id FROM \`${relay.dbName}\`.messages ORDER BY id`)).trim().split("\n").map(Number);
    for (const c of clients) {
      assert.equal(c.socket.io.engine.transport.name, "websocket", c.name);
      await c.waitForCount(ids.length, 15000);
      assert.deepEqual(
        c.messages.map((m) => m.id),
        ids,
        `${c.name}: the table, in order, once`,
      );
    }
  });
});
