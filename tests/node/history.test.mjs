// Paged history with the stock client (issue 13): a first visit may ask for only the newest
// messages (`auth.historyLimit`), the acked "history" event pages back through the rest by
// primary key, in order, with no duplicate at the seams; bad page bounds get a clear error ack
// and the connection stays; a client that sends only `serverOffset` gets everything, as before.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { makeClient, connected, collect, emitAck, newOffset, mysqlExec, relayFixture } from "./helpers.mjs";

const STORED = 250;

describe("history pages", () => {
  const { relay, sockets } = relayFixture({ env: { MAX_MESSAGES_PER_SECOND: "0" } });
  let ids = [];

  async function client(name, auth) {
    const socket = makeClient(relay.url, { auth });
    sockets.push(socket);
    const c = collect(socket, name);
    await connected(socket, 10000, name);
    return c;
  }

  /** The history page before `before` (the ack's one argument). */
  async function page(c, args) {
    const [err, reply] = await emitAck(c.socket, ["history", args]);
    assert.equal(err, null, "acked");
    return reply;
  }

  before(async () => {
    const writer = await client("writer", { serverOffset: Number.MAX_SAFE_INTEGER });
    for (let i = 0; i < STORED; i += 50) {
      const acks = await Promise.all(
        Array.from({ length: 50 }, (_, k) => emitAck(writer.socket, ["chat message", `h ${i + k}`, newOffset("h")])),
      );
      assert.ok(acks.every((a) => a.length === 1 && a[0] === null), "stored");
    }
    ids = (await mysqlExec(`SELECT id FROM \`${relay.dbName}\`.messages ORDER BY id`)).trim().split("\n").map(Number);
    assert.equal(ids.length, STORED);
  });

  it("a first visit with historyLimit gets the newest page, then pages back to the first message", async () => {
    const c = await client("visitor", { serverOffset: 0, historyLimit: 100 });
    await c.waitForCount(100);
    assert.deepEqual(c.messages.map((m) => m.id), ids.slice(-100), "the newest 100, in order");
    const seen = c.messages.map((m) => m.id);
    let more = true;
    let pages = 0;
    while (more) {
      const reply = await page(c, { before: seen[0], limit: 100 });
      assert.ok(Array.isArray(reply.messages), JSON.stringify(reply));
      seen.unshift(...reply.messages.map((m) => m.id));
      more = reply.more;
      pages += 1;
      assert.ok(pages <= 3, "the pages end");
    }
    assert.deepEqual(seen, ids, "every message once, in order, across the seams");
    // The newest page still gets live traffic afterwards.
    const [err] = await emitAck(c.socket, ["chat message", "live after paging", newOffset("l")]);
    assert.equal(err, null);
    await c.waitForText("live after paging");
  });

  it("a page holds the newest messages below `before`, ascending, with their text", async () => {
    const c = await client("pager", { serverOffset: Number.MAX_SAFE_INTEGER });
    const reply = await page(c, { before: String(ids[10]), limit: 5 });
    assert.deepEqual(reply, {
      messages: ids.slice(5, 10).map((id, k) => ({ id, msg: `h ${5 + k}` })),
      more: true,
    });
    const first = await page(c, { before: ids[0] });
    assert.deepEqual(first, { messages: [], more: false }, "nothing before the first message");
  });

  it("bad page bounds get an error ack and the connection stays", async () => {
    const c = await client("bad", { serverOffset: Number.MAX_SAFE_INTEGER });
    const before = "history: before must be a positive integer (a message id)";
    const limit = "history: limit must be an integer from 1 to 1000";
    for (const [args, error] of [
      [{}, before],
      [null, before],
      [{ before: 0 }, before],
      [{ before: -5 }, before],
      [{ before: "abc" }, before],
      [{ before: 1e400 }, before],
      [{ before: [3] }, before],
      [{ before: 10, limit: 0 }, limit],
      [{ before: 10, limit: 1001 }, limit],
      [{ before: 10, limit: "many" }, limit],
      [{ before: 10, limit: -1 }, limit],
    ]) {
      assert.deepEqual(await page(c, args), { error }, JSON.stringify(args));
    }
    assert.ok(c.socket.connected, "still connected");
    // A fraction rounds down, as serverOffset does (protocol.md, History pages).
    assert.deepEqual((await page(c, { before: ids[2] + 0.5, limit: 1 })).messages.map((m) => m.id), [ids[1]]);
    const ok = await page(c, { before: ids[1], limit: 1 });
    assert.deepEqual(ok.messages.map((m) => m.id), [ids[0]]);
  });

  it("a client that sends only serverOffset gets every message, as before", async () => {
    const c = await client("tutorial", { serverOffset: 0 });
    await c.waitForCount(STORED);
    assert.deepEqual(c.messages.slice(0, STORED).map((m) => m.id), ids);
  });
});
