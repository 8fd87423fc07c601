// Durable Socket.IO connection-state recovery with the stock client (issue 13): a client whose
// connection drops mid-traffic reconnects with `recovered === true`, the same `socket.id`, and
// exactly the messages it missed, in order; also after relay restarted (both stores) and again
// and again. What relay cannot prove complete is never a partial recovery: an expired window, a
// forged pid and a pid another client holds get `recovered === false` and the ordinary replay.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startRelay, connected, collect, emitAck, newOffset, closeAll, mysqlExec, relayFixture, restartFixture } from "./helpers.mjs";

/** A stock client as the tutorial's step 8 creates it (recovery is the client's default). */
function tutorialClient(url, opts = {}) {
  return io(url, {
    transports: ["websocket"],
    auth: { serverOffset: 0 },
    ackTimeout: 10000,
    retries: 3,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    ...opts,
  });
}

/** Resolves with the next "connect" of `socket`. */
function nextConnect(socket, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no reconnect")), ms);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The table's ids, ascending. */
async function tableIds(relay) {
  const out = relay.dbName && relay.store !== "sqlite" ? await mysqlExec(`SELECT id FROM \`${relay.dbName}\`.messages ORDER BY id`) : "";
  return out.trim() ? out.trim().split("\n").map(Number) : [];
}

describe("connection-state recovery", () => {
  let relay;
  const sockets = [];

  before(async () => {
    // The writer sends as fast as its acks come: no per-connection rate limit.
    relay = await startRelay({ env: { MAX_MESSAGES_PER_SECOND: "0" } });
  });

  after(async () => {
    closeAll(...sockets);
    if (relay) await relay.stop();
  });

  function client(name, opts) {
    const socket = tutorialClient(relay.url, opts);
    sockets.push(socket);
    return collect(socket, name);
  }

  it("a dropped connection recovers: same id, recovered, exactly the missed messages, again and again", async () => {
    const writer = client("writer");
    const reader = client("reader");
    await Promise.all([connected(writer.socket), connected(reader.socket)]);
    const id = reader.socket.id;
    assert.equal(reader.socket.recovered, false, "a fresh connection is not a recovery");
    let sending = true;
    let n = 0;
    const traffic = (async () => {
      while (sending) {
        assert.deepEqual(await emitAck(writer.socket, ["chat message", `traffic ${n++}`, newOffset("w")], { ms: 15000 }), [null]);
      }
    })();
    for (let round = 0; round < 3; round++) {
      await reader.waitForCount(reader.messages.length + 5, 10000);
      const back = nextConnect(reader.socket);
      reader.socket.io.engine.close(); // the transport drops; the client reconnects on its own
      await back;
      assert.equal(reader.socket.recovered, true, `round ${round}: recovered`);
      assert.equal(reader.socket.id, id, `round ${round}: the same socket id`);
    }
    await reader.waitForCount(reader.messages.length + 5, 10000);
    sending = false;
    await traffic;
    const ids = await tableIds(relay);
    await reader.waitForCount(ids.length, 10000);
    assert.deepEqual(
      reader.messages.map((m) => m.id),
      ids,
      "every message once, in order, across three recoveries",
    );
  });

  it("a forged pid, an unknown offset and a pid another client holds are not recovered", async () => {
    const a = client("a");
    await connected(a.socket);
    await emitAck(a.socket, ["chat message", `for a ${newOffset()}`, newOffset("a")]);
    await a.waitForCount(1);
    const pid = a.socket._pid;
    const offset = a.socket._lastOffset;
    assert.equal(typeof pid, "string");
    assert.equal(offset, String(a.messages.at(-1).id));
    const ids = await tableIds(relay);
    // B presents A's pid while A is connected; C a forged pid; D an offset that is no message.
    const cases = [
      ["held", { pid, offset }],
      ["forged", { pid: "AAAAAAAAAAAAAAAAAAAA", offset }],
      ["unknown offset", { pid, offset: "999999999" }],
    ];
    for (const [name, recovery] of cases) {
      const socket = tutorialClient(relay.url);
      sockets.push(socket);
      // What the stock client sends when it reconnects: {pid, offset, ...auth}.
      socket._pid = recovery.pid;
      socket._lastOffset = recovery.offset;
      const c = collect(socket, name);
      await connected(socket);
      assert.equal(socket.recovered, false, `${name}: not recovered`);
      assert.notEqual(socket.id, a.socket.id, `${name}: a new socket id`);
      // The ordinary replay (serverOffset 0): everything.
      await c.waitForCount(ids.length);
      assert.deepEqual(
        c.messages.map((m) => m.id),
        ids,
        `${name}: the ordinary replay`,
      );
    }
  });
});

describe("recovery window", () => {
  const { relay, sockets } = relayFixture({ env: { RECOVERY_WINDOW_MS: "300" } });

  it("after the window passed, the reconnect is the ordinary replay", async () => {
    const socket = tutorialClient(relay.url, { reconnectionDelay: 1500, reconnectionDelayMax: 1500, randomizationFactor: 0 });
    sockets.push(socket);
    const c = collect(socket, "late");
    await connected(socket);
    await emitAck(socket, ["chat message", `before the drop ${newOffset()}`, newOffset("l")]);
    await c.waitForCount(1);
    const id = socket.id;
    const back = nextConnect(socket);
    socket.io.engine.close();
    await back; // 1.5 s later: beyond the 300 ms window
    assert.equal(socket.recovered, false);
    assert.notEqual(socket.id, id);
  });
});

for (const store of ["mysql", "sqlite"]) describe(`recovery across a restart (${store} store)`, () => {
  const { relays, sockets } = restartFixture();

  it("clients of a relay that restarted recover with their ids and exactly what they missed", async () => {
    const first = await startRelay({ store });
    relays.push(first);
    const reader = collect(tutorialClient(first.url), "reader");
    const writer = tutorialClient(first.url);
    sockets.push(reader.socket, writer);
    await Promise.all([connected(reader.socket), connected(writer)]);
    const id = reader.socket.id;
    for (let i = 0; i < 3; i++) await emitAck(writer, ["chat message", `before ${i}`, newOffset("w")]);
    await reader.waitForCount(3);
    const exit = await first.stop({ dropDatabase: false });
    assert.equal(exit.code, 0);
    // The writer sends while relay is down: queued by its client, stored after the restart.
    const queued = emitAck(writer, ["chat message", "while down", newOffset("w")], { ms: 20000 });
    const second = await startRelay({ store, dbName: first.dbName, env: { PORT: String(first.port) } });
    relays.push(second);
    await connected(reader.socket, 10000, "reader after the restart");
    await queued;
    await emitAck(writer, ["chat message", "after", newOffset("w")]);
    await reader.waitForText("after", 10000);
    assert.equal(reader.socket.recovered, true, "recovered across the restart");
    assert.equal(reader.socket.id, id, "the same socket id across the restart");
    assert.deepEqual(
      reader.messages.map((m) => m.msg),
      ["before 0", "before 1", "before 2", "while down", "after"],
    );
  });
});
