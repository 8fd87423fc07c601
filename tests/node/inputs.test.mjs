// Inputs the stock client really sends that relay once mishandled (issue 14): a Buffer
// argument (a binary event with attachments), text cut in the middle of an emoji (a lone UTF-16
// surrogate, which JSON.stringify writes as an escape), an offset kept as a string. Each gets the
// reference server's decoding and the chat's ordinary rules; the connection stays.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { makeClient, connected, collect, emitAck, newOffset, relayFixture } from "./helpers.mjs";

describe("stock socket.io-client inputs", () => {
  const { relay, sockets } = relayFixture();

  async function client(name, opts = {}) {
    const socket = makeClient(relay.url, opts);
    sockets.push(socket);
    const c = collect(socket, name);
    await connected(socket, 5000, name);
    return c;
  }

  it("a Buffer as the message gets the ordinary refusal; a Buffer after clientOffset changes nothing", async () => {
    const c = await client("binary");
    const refused = await emitAck(c.socket, ["chat message", Buffer.from([1, 2, 3]), newOffset("b")]);
    assert.deepEqual(refused, [null, { error: "message must be a string" }]);
    assert.equal(c.socket.connected, true);
    const text = `with an attachment ${newOffset("t")}`;
    const stored = await emitAck(c.socket, ["chat message", text, newOffset("b"), Buffer.from("a file")]);
    assert.deepEqual(stored, [null]);
    await c.waitForText(text);
    assert.equal(c.socket.connected, true);
  });

  it("an emoji cut in half is stored with U+FFFD in place of the lone surrogate", async () => {
    const c = await client("surrogate");
    const cut = "half 😀".slice(0, -1); // "half \ud83d"
    const ack = await emitAck(c.socket, ["chat message", cut, newOffset("s")]);
    assert.deepEqual(ack, [null]);
    await c.waitForText("half \ufffd");
    assert.equal(c.socket.connected, true);
  });

  it("auth with a lone surrogate or an out-of-range number still connects", async () => {
    const note = await client("auth-note", { auth: { serverOffset: 0, note: "😀".slice(0, 1) } });
    assert.equal(note.socket.connected, true);
    // JSON.stringify writes Infinity as null: a raw packet carries 1e400 (see tests/inputs.rs).
  });

  it("a serverOffset kept as a string replays only what comes after it", async () => {
    const w = await client("writer");
    const texts = [];
    for (let i = 0; i < 4; i++) {
      const text = `string offset ${i} ${newOffset("w")}`;
      texts.push(text);
      assert.deepEqual(await emitAck(w.socket, ["chat message", text, newOffset("w")]), [null]);
    }
    await w.waitForText(texts[3]);
    const second = w.messages.find((m) => m.msg === texts[1]).id;
    const r = await client("reader", { auth: { serverOffset: String(second) } });
    await r.waitForText(texts[3]);
    assert.deepEqual(
      r.messages.map((m) => m.msg),
      texts.slice(2),
    );
  });
});

// A WebSocket message over maxPayload (1 MB) is answered with close code 1009 and its reason,
// however much of it is still on its way: the Node `ws` client (the stock client's transport in
// Node) saw 1006 for most messages of 1.1 to 4 MB, as relay closed the connection with the rest
// unread (a reset that overtook the close frame).
describe("a message over maxPayload, from the Node ws client", () => {
  const { relay } = relayFixture();

  async function closeCodeFor(bytes) {
    const { default: WebSocket } = await import("ws");
    const url = relay.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.on("message", (data) => {
        const text = data.toString();
        if (text.startsWith("0{")) ws.send("40");
        else if (text.startsWith("40")) ws.send("42" + JSON.stringify(["chat message", "x".repeat(bytes), "big"]));
      });
      ws.on("error", () => {});
      ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
      setTimeout(() => reject(new Error(`no close for ${bytes} bytes`)), 10000);
    });
  }

  for (const bytes of [1_100_000, 4_000_000, 20_000_000]) {
    it(`${bytes} bytes: 1009, three times out of three`, async () => {
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await closeCodeFor(bytes), { code: 1009, reason: "message exceeds maxPayload" });
      }
    });
  }
});
