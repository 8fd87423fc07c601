// The stock socket.io-client (Node) against the relay server.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { makeClient, connected, collect, emitAck, newOffset, PATIENCE_MS, relayFixture } from "./helpers.mjs";

// Per test: a bound for a hung test, not a speed requirement (a busy machine is slow).
const TEST_TIMEOUT = 120000;

for (const store of ["mysql", "sqlite"]) describe(`stock socket.io-client (${store} store)`, () => {
  const { relay, sockets } = relayFixture({ store });

  /** A connected stock client plus a collector of its "chat message" events. */
  async function client(name, opts = {}) {
    const socket = makeClient(relay.url, opts);
    sockets.push(socket);
    const c = collect(socket, name);
    await connected(socket, undefined, name);
    return c;
  }

  /** Emits a valid chat message and asserts the plain success ack (err null, no reply). */
  async function send(c, text, offset = newOffset(c.name)) {
    const ack = await emitAck(c.socket, ["chat message", text, offset], { log: c.log });
    assert.deepEqual(ack, [null], `${c.name}: expected a plain ack for ${JSON.stringify(text).slice(0, 80)}, got ${JSON.stringify(ack)}`);
    return offset;
  }

  /**
   * Sends a unique message from `sender` and waits until every collector has
   * received it. The server broadcasts in order, so anything the server sent
   * before it has arrived by then: a barrier for "nothing else arrived" checks.
   */
  async function barrier(sender, collectors, tag = "barrier") {
    const text = `${tag} ${newOffset("barrier")}`;
    await send(sender, text);
    let id;
    for (const c of collectors) {
      const m = await c.waitForText(text);
      if (id === undefined) id = m.id;
      assert.equal(m.id, id, `${c.name} got barrier ${text} with id ${m.id}, another client with ${id}`);
    }
    return { text, id };
  }

  function indexOfText(c, text) {
    const i = c.messages.findIndex((m) => m.msg === text);
    assert.notEqual(i, -1, `${c.name} never received ${JSON.stringify(text)}`);
    return i;
  }

  function countText(c, text) {
    return c.messages.filter((m) => m.msg === text).length;
  }

  function assertIncreasingIds(c) {
    for (let i = 0; i < c.messages.length; i++) {
      const { id } = c.messages[i];
      assert.equal(typeof id, "number", `${c.name}: id of message #${i} is ${JSON.stringify(id)}, not a number`);
      assert.ok(Number.isSafeInteger(id) && id > 0, `${c.name}: id ${id} is not a positive integer`);
      if (i > 0) {
        assert.ok(id > c.messages[i - 1].id, `${c.name}: ids not strictly increasing: ${c.messages[i - 1].id} then ${id}`);
      }
    }
  }

  it("(a) sends, acks and broadcasts to every client, the sender first receiving the broadcast", { timeout: TEST_TIMEOUT }, async () => {
    const a = await client("A");
    const b = await client("B");
    const text = `hello from A ${newOffset()}`;

    await send(a, text);

    const atA = await a.waitForText(text);
    const atB = await b.waitForText(text);
    assert.equal(typeof atA.id, "number", `broadcast id should be a JSON number, got ${JSON.stringify(atA.id)}`);
    assert.equal(atA.id, atB.id, "A and B got different ids for the same message");
    // (msg, id), then the id again as a string: connection-state recovery's offset (on by default).
    assert.deepEqual(atA.extra, [String(atA.id)], `broadcast should carry (msg, id, "id"), got extra args ${JSON.stringify(atA.extra)}`);

    const msgAt = a.log.findIndex((e) => e.type === "msg" && e.msg === text);
    const ackAt = a.log.findIndex((e) => e.type === "ack");
    assert.ok(msgAt !== -1 && msgAt < ackAt, `A must receive its own broadcast before the ack; A's log: ${JSON.stringify(a.log)}`);

    await barrier(a, [a, b]);
    assert.equal(countText(a, text), 1, "A received the message more than once");
    assert.equal(countText(b, text), 1, "B received the message more than once");
    assertIncreasingIds(a);
    assertIncreasingIds(b);
  });

  it("(b) drops a duplicate clientOffset: acked twice, stored and broadcast once", { timeout: TEST_TIMEOUT }, async () => {
    const a = await client("A");
    const observer = await client("O");
    const text = `dedupe me ${newOffset()}`;
    const other = `same offset, other text ${newOffset()}`;
    const offset = newOffset("dup");

    await send(a, text, offset);
    await send(a, text, offset);
    await send(a, other, offset); // same clientOffset, different content: still a duplicate
    await barrier(a, [a, observer]);

    for (const c of [a, observer]) {
      assert.equal(countText(c, text), 1, `${c.name}: expected exactly one broadcast of the duplicated message`);
      assert.equal(countText(c, other), 0, `${c.name}: a message with an already used clientOffset was broadcast`);
    }
    const storedId = a.messages.find((m) => m.msg === text).id;

    // A fresh client replays the whole table: the row is there exactly once.
    const fresh = await client("F", { serverOffset: 0 });
    const { id: lastId } = await barrier(a, [fresh], "after-dedupe");
    assert.equal(countText(fresh, text), 1, "replay from serverOffset 0 should contain the deduplicated message exactly once");
    assert.equal(countText(fresh, other), 0, "replay contains a message whose clientOffset was a duplicate");
    assert.equal(fresh.messages.find((m) => m.msg === text).id, storedId);
    assert.ok(fresh.messages.at(-1).id === lastId, "replay/live traffic out of order");
    assertIncreasingIds(fresh);
    assertIncreasingIds(observer);
  });

  it("(c) a client that reconnects with serverOffset gets exactly the messages it missed, in order", { timeout: TEST_TIMEOUT }, async () => {
    const a = await client("A");
    const b = await client("B");

    const start = `before B leaves ${newOffset()}`;
    await send(a, start);
    const lastSeen = await b.waitForText(start);
    await a.waitForText(start);

    b.socket.disconnect();
    assert.equal(b.socket.connected, false);

    const missed = [];
    for (let i = 1; i <= 5; i++) {
      const text = `missed #${i} ${newOffset()}`;
      missed.push(text);
      await send(a, text);
    }
    for (const text of missed) await a.waitForText(text);
    const expected = missed.map((text) => ({ msg: text, id: a.messages.find((m) => m.msg === text).id }));

    const before = b.messages.length;
    assert.equal(b.messages.at(-1).msg, start, `B received messages while disconnected: ${JSON.stringify(b.messages.slice(-5))}`);

    b.socket.auth.serverOffset = lastSeen.id;
    b.socket.connect();
    await connected(b.socket, undefined, "B (reconnect)");
    await b.waitForCount(before + 5);
    const { text: barrierText, id: barrierId } = await barrier(a, [a, b], "after-reconnect");

    const got = b.since(before).map(({ msg, id }) => ({ msg, id }));
    assert.deepEqual(got, [...expected, { msg: barrierText, id: barrierId }], "B should get exactly the 5 missed messages, in order, then live traffic");
    assertIncreasingIds(b);
  });

  it("(d) refuses invalid input with an {error} ack and stores/broadcasts nothing", { timeout: TEST_TIMEOUT }, async () => {
    const a = await client("A");
    const observer = await client("O");
    const { id: markId } = await barrier(a, [a, observer], "before-invalid");
    const markIndex = observer.messages.findIndex((m) => m.id === markId);

    const nonce = newOffset("bad");
    const invalid = [
      ["msg is a number", ["chat message", 42, newOffset("bad")]],
      ["msg is null", ["chat message", null, newOffset("bad")]],
      ["msg is an object", ["chat message", { text: `obj ${nonce}` }, newOffset("bad")]],
      ["clientOffset missing", ["chat message", `no offset ${nonce}`]],
      ["clientOffset is a number", ["chat message", `numeric offset ${nonce}`, 7]],
      ["clientOffset empty", ["chat message", `empty offset ${nonce}`, ""]],
      ["clientOffset over 255 chars", ["chat message", `long offset ${nonce}`, "o".repeat(256)]],
      ["unknown event", ["chat", `unknown event ${nonce}`, newOffset("bad")]],
      ["message over 65535 bytes", ["chat message", "\u00e9".repeat(32768), newOffset("bad")]], // 65536 bytes of UTF-8
    ];
    for (const [what, args] of invalid) {
      const ack = await emitAck(a.socket, args);
      assert.equal(ack.length, 2, `${what}: expected ack (null, {error}), got ${JSON.stringify(ack)}`);
      assert.equal(ack[0], null, `${what}: client-side error ${ack[0]}`);
      assert.ok(
        ack[1] && typeof ack[1] === "object" && typeof ack[1].error === "string" && ack[1].error.length > 0,
        `${what}: expected ack argument {error: "<reason>"}, got ${JSON.stringify(ack[1])}`,
      );
    }

    // Limits are inclusive: these are valid.
    const edgeOffset = "e".repeat(250) + newOffset("").slice(-5);
    assert.equal(edgeOffset.length, 255);
    const edgeOffsetText = `255-char clientOffset ${nonce}`;
    await send(a, edgeOffsetText, edgeOffset);
    const maxText = "\u00e9".repeat(32767) + "!"; // exactly 65535 bytes of UTF-8
    assert.equal(Buffer.byteLength(maxText), 65535);
    await send(a, maxText);

    const { text: endText, id: endId } = await barrier(a, [a, observer], "after-invalid");
    const after = observer.messages.slice(markIndex + 1).map((m) => m.msg);
    assert.equal(after.length, 3, `observer should get only the 2 valid messages and the barrier, got ${after.length}: ${JSON.stringify(after.map((t) => String(t).slice(0, 60)))}`);
    assert.equal(after[0], edgeOffsetText);
    assert.ok(after[1] === maxText, "the 65535-byte message did not come back intact");
    assert.equal(after[2], endText);
    assert.equal(observer.messages.at(-1).id, endId);
    assertIncreasingIds(observer);
  });

  it("(e) round-trips unicode byte-exactly, live and from the database", { timeout: TEST_TIMEOUT }, async () => {
    const a = await client("A");
    const observer = await client("O");
    const { id: markId } = await barrier(a, [a, observer], "before-unicode");
    const markIndex = observer.messages.findIndex((m) => m.id === markId);

    const texts = [
      "emoji 😀🎉 family 👩‍👩‍👧‍👦 flag 🇯🇵 skin 👍🏽",
      "CJK 你好，世界 こんにちは 안녕하세요",
      "combining: e\u0301 a\u0308 n\u0303 \u1e9b\u0323 Z\u0351\u0352\u0353",
      "4-byte: 𝄞 𠜎 𝕳𝖊𝖑𝖑𝖔 \u{1F9EA}",
      "RTL: שלום עולם — مرحبا بالعالم \u200F!",
      "escapes: \"quoted\" back\\slash tab\tnew\nline \u2028 \u2029 </script> <b>x</b> & ' `",
    ];
    for (const t of texts) await send(a, t);
    const { text: endText, id: endId } = await barrier(a, [a, observer], "after-unicode");

    const live = observer.messages.slice(markIndex + 1);
    assert.equal(live.length, texts.length + 1, `expected ${texts.length} unicode messages and the barrier, got ${live.length}`);
    texts.forEach((t, i) => {
      const got = live[i].msg;
      assert.ok(
        Buffer.from(String(got), "utf8").equals(Buffer.from(t, "utf8")),
        `live broadcast #${i} differs:\n  sent ${JSON.stringify(t)}\n  got  ${JSON.stringify(got)}`,
      );
    });
    assert.equal(live.at(-1).msg, endText);

    // Replay from the database (utf8mb4 all the way).
    const fresh = await client("F", { serverOffset: markId });
    await fresh.waitUntil((m) => m.some((e) => e.id === endId), `waiting for replay up to id ${endId}`);
    const replayed = fresh.messages.map((m) => m.msg);
    assert.equal(replayed.length, texts.length + 1, `replay from serverOffset ${markId} should return exactly ${texts.length + 1} rows`);
    texts.forEach((t, i) => {
      assert.ok(
        Buffer.from(String(replayed[i]), "utf8").equals(Buffer.from(t, "utf8")),
        `replayed row #${i} differs:\n  sent ${JSON.stringify(t)}\n  got  ${JSON.stringify(replayed[i])}`,
      );
    });
    assert.deepEqual(
      fresh.messages.map((m) => m.id),
      live.map((m) => m.id),
      "replayed ids differ from the live ones",
    );
  });

  it("(f) clients joining during a burst get replay + live traffic with no gap and no duplicate", { timeout: TEST_TIMEOUT }, async () => {
    const observer = await client("O");
    await barrier(observer, [observer], "before-burst");
    // Senders without `retries` do not queue: many emits are in flight at once.
    const senders = [await client("S1", { retries: 0, ackTimeout: PATIENCE_MS }), await client("S2", { retries: 0, ackTimeout: PATIENCE_MS })];
    const perSender = 100;
    const joinAt = new Set([20, 70, 130]);
    const joiners = [];
    let acked = 0;
    const pending = [];
    for (let i = 0; i < perSender; i++) {
      for (const s of senders) {
        const text = `burst ${s.name} #${i} ${newOffset()}`;
        pending.push(
          emitAck(s.socket, ["chat message", text, newOffset(s.name)]).then((ack) => {
            assert.deepEqual(ack, [null], `${s.name}: ack for ${text}: ${JSON.stringify(ack)}`);
            acked++;
            if (joinAt.has(acked)) {
              const socket = makeClient(relay.url, { serverOffset: 0 });
              sockets.push(socket);
              joiners.push(collect(socket, `J${joiners.length + 1}`));
            }
          }),
        );
      }
    }
    await Promise.all(pending);
    assert.equal(joiners.length, joinAt.size);
    const { id: endId } = await barrier(observer, [observer, ...joiners], "after-burst");

    const expected = observer.messages.map(({ msg, id }) => ({ msg, id }));
    assert.equal(observer.messages.filter((m) => String(m.msg).startsWith("burst ")).length, 2 * perSender);
    assertIncreasingIds(observer);
    for (const j of joiners) {
      assertIncreasingIds(j);
      assert.equal(j.messages.at(-1).id, endId);
      // A joiner with serverOffset 0 sees the whole table; compare the part the observer saw live.
      const got = j.messages.filter((m) => m.id >= expected[0].id).map(({ msg, id }) => ({ msg, id }));
      assert.equal(got.length, expected.length, `${j.name}: ${got.length} messages instead of ${expected.length} (gap or duplicate at the replay/live boundary)`);
      assert.deepEqual(got, expected, `${j.name}: replay + live traffic differs from what the observer received`);
    }
  });
});
