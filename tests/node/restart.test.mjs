// Server shutdown and restart: clients are not kicked (no Socket.IO "41"),
// they reconnect on their own, resume from their serverOffset, and messages
// survive the restart because they live in the database.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { startRelay, pageLikeClient, connected, disconnected, emitAck, newOffset, restartFixture } from "./helpers.mjs";

for (const store of ["mysql", "sqlite"]) describe(`server restart (${store} store)`, () => {
  const { relays, sockets } = restartFixture();

  /** pageLikeClient, its socket closed after the suite. */
  function pageLike(url, name, opts = {}) {
    const c = pageLikeClient(url, name, opts);
    sockets.push(c.socket);
    return c;
  }

  it("clients reconnect after SIGTERM + restart and get exactly what they missed", { timeout: 120000 }, async () => {
    const first = await startRelay({ store });
    relays.push(first);
    const a = pageLike(first.url, "A");
    const b = pageLike(first.url, "B");
    await Promise.all([connected(a.socket, undefined, "A"), connected(b.socket, undefined, "B")]);

    const before = [`before restart 1 ${newOffset()}`, `before restart 2 ${newOffset()}`];
    for (const text of before) {
      assert.deepEqual(await emitAck(a.socket, ["chat message", text, newOffset("A")]), [null]);
    }
    for (const text of before) await b.waitForText(text);

    // Shut the server down: both clients see the transport close, not a kick.
    const reasons = [];
    for (const c of [a, b]) c.socket.once("disconnect", (reason, details) => reasons.push({ reason, code: details?.context?.code }));
    const gone = Promise.all([disconnected(a.socket, undefined, "A"), disconnected(b.socket, undefined, "B")]);
    const exit = await first.stop({ dropDatabase: false });
    await gone;
    assert.equal(exit.code, 0, `relay should exit 0 on SIGTERM, got ${JSON.stringify(exit)}`);
    for (const r of reasons) {
      assert.notEqual(r.reason, "io server disconnect", "the server sent Socket.IO DISCONNECT (41) on shutdown: clients will not reconnect");
      if (r.code !== undefined) assert.equal(r.code, 1001, `expected WebSocket close code 1001 on shutdown, got ${r.code}`);
    }
    assert.ok(a.socket.active && b.socket.active, "clients should keep trying to reconnect");

    // A emits while the server is down: the stock client queues it.
    const offline = `sent while the server was down ${newOffset()}`;
    const offlineAck = emitAck(a.socket, ["chat message", offline, newOffset("A")], { ms: 60000 });

    const bCountBefore = b.messages.length;
    const second = await startRelay({ store, dbName: first.dbName, env: { PORT: String(first.port) } });
    relays.push(second);
    await Promise.all([connected(a.socket, undefined, "A (after restart)"), connected(b.socket, undefined, "B (after restart)")]);
    assert.deepEqual(await offlineAck, [null], "the message queued while offline was not acked after the restart");

    const live = `after restart ${newOffset()}`;
    assert.deepEqual(await emitAck(a.socket, ["chat message", live, newOffset("A")]), [null]);
    await b.waitForText(live);
    assert.deepEqual(
      b.since(bCountBefore).map((m) => m.msg),
      [offline, live],
      "B should get exactly the messages sent after it lost the connection",
    );

    // The history survived the restart.
    const fresh = pageLike(second.url, "F");
    await fresh.waitForText(live);
    assert.deepEqual(
      fresh.messages.map((m) => m.msg),
      [...before, offline, live],
      "history after the restart",
    );
  });
});
