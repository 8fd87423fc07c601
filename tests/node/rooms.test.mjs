// Rooms with the stock socket.io-client: a room is a Socket.IO namespace (`/` is the tutorial's
// chat, room `general` is `/general`), each a chat of its own on one global sequence of ids. One
// Manager holds several rooms over ONE Engine.IO connection (WebSocket and polling); each room's
// sockets hear exactly that room's rows, once, in order; replay (`auth.serverOffset`), history
// pages and connection-state recovery work per room; clientOffset dedupe is one space for the
// whole server. Invalid or not-allowed names get "Invalid namespace" and leave the Manager's other
// rooms alone; MAX_ROOMS caps the rooms that hold messages; GET /rooms lists them.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { io, Manager } from "socket.io-client";
import {
  makeClient,
  connected,
  disconnected,
  collect,
  emitAck,
  newOffset,
  mysqlExec,
  relayFixture,
  withTimeout,
  until,
  PATIENCE_MS,
} from "./helpers.mjs";

const NO_REPLAY = Number.MAX_SAFE_INTEGER;
const SOCKET_OPTS = { ackTimeout: 10000, retries: 3 };
const TRANSPORTS = [
  ["websocket", ["websocket"]],
  ["polling", ["polling"]],
];

/** Rows of an SQL query against the relay's database (both stores), each an array of strings. */
function query(relay, sql) {
  if (relay.store === "sqlite") {
    const file = path.join(os.tmpdir(), relay.dbName, "chat.db");
    return new Promise((resolve, reject) => {
      execFile("sqlite3", ["-cmd", ".timeout 5000", "-separator", "\t", file, sql], { timeout: PATIENCE_MS }, (err, stdout, stderr) => {
        if (err) reject(new Error(`sqlite3 ${JSON.stringify(sql)} failed: ${stderr || err.message}`));
        else resolve(rowsOf(stdout));
      });
    });
  }
  return mysqlExec(`USE \`${relay.dbName}\`; ${sql}`).then(rowsOf);
}

function rowsOf(stdout) {
  const text = stdout.replace(/\n$/, "");
  return text ? text.split("\n").map((line) => line.split("\t")) : [];
}

/** The stored name of namespace `nsp` ("" for "/"). */
const roomName = (nsp) => nsp.replace(/^\//, "");

/** A room's rows as [{id, msg}], by id. */
async function roomRows(relay, nsp) {
  const rows = await query(relay, `SELECT id, content FROM messages WHERE room = '${roomName(nsp)}' ORDER BY id`);
  return rows.map(([id, msg]) => ({ id: Number(id), msg }));
}

/** A metric of the relay (0 when absent). */
async function metric(relay, name) {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** GET /rooms, parsed. */
async function getRooms(relay) {
  const res = await fetch(`${relay.url}/rooms`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") || "", /application\/json/);
  return res.json();
}

/** What GET /rooms should say, from the table: rooms with messages, "/" first, then by name. */
async function expectedRooms(relay) {
  const rows = await query(relay, "SELECT room, MAX(id) FROM messages GROUP BY room");
  const rooms = rows.map(([room, last]) => ({ room: room === "" ? "/" : room, last: Number(last) }));
  return rooms.sort((a, b) => (a.room === "/" ? -1 : b.room === "/" ? 1 : a.room < b.room ? -1 : a.room > b.room ? 1 : 0));
}

/** Resolves with the next "connect" of `socket`. */
function nextConnect(socket, what = "socket") {
  return withTimeout(new Promise((resolve) => socket.once("connect", resolve)), PATIENCE_MS, `${what}: no reconnect`);
}

/** Resolves with the next connect_error of `socket` (rejects if it connects instead). */
function nextConnectError(socket, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect_error", resolve);
      socket.once("connect", () => reject(new Error(`${what}: connected, expected a connect_error`)));
    }),
    PATIENCE_MS,
    `${what}: no connect_error`,
  );
}

/** Sends a message and asserts the plain success ack. */
async function send(socket, text, offset = newOffset("s")) {
  const ack = await emitAck(socket, ["chat message", text, offset]);
  assert.deepEqual(ack, [null], `plain ack for ${JSON.stringify(text)}`);
  return offset;
}

/** Asserts that collector `c` saw exactly room `nsp`'s rows (those from `fromId` on), in order, once. */
async function assertSawRoom(relay, c, nsp, { fromId = 0 } = {}) {
  const rows = (await roomRows(relay, nsp)).filter((r) => r.id >= fromId);
  await c.waitUntil((m) => m.length >= rows.length, `${rows.length} messages of ${nsp}`);
  assert.deepEqual(
    c.messages.map(({ id, msg }) => ({ id, msg })),
    rows,
    `${c.name}: exactly ${nsp}'s rows, in order, once`,
  );
}

for (const store of ["mysql", "sqlite"]) {
  for (const [transportName, transports] of TRANSPORTS) {
    describe(`rooms (${store} store, ${transportName})`, () => {
      const { relay, sockets } = relayFixture({ store, env: { MAX_MESSAGES_PER_SECOND: "0" } });

      /** A new Manager on this describe's transport. */
      function manager(opts = {}) {
        return new Manager(relay.url, { transports, reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });
      }

      /** A room socket of `mgr` with a collector. */
      function roomSocket(mgr, nsp, { serverOffset = 0, name = nsp } = {}) {
        const socket = mgr.socket(nsp, { auth: { serverOffset }, ...SOCKET_OPTS });
        sockets.push(socket);
        return collect(socket, name);
      }

      /** A client of its own (forceNew) in room `nsp`. */
      function separate(nsp, { serverOffset = 0, name = nsp, transports: t = transports } = {}) {
        const socket = makeClient(relay.url + (nsp === "/" ? "" : nsp), { serverOffset, transports: t });
        sockets.push(socket);
        return collect(socket, name);
      }

      it("one Manager (default multiplex) holds /, /a and /b on one Engine.IO connection; each room hears only itself", async () => {
        const sessionsBefore = await metric(relay, "relay_connected_sockets");
        const opts = { transports, auth: { serverOffset: 0 }, ...SOCKET_OPTS, reconnectionDelay: 100, reconnectionDelayMax: 500 };
        const root = collect(io(relay.url, opts), "mux /");
        const a = collect(io(`${relay.url}/a`, opts), "mux /a");
        const b = collect(io(`${relay.url}/b`, opts), "mux /b");
        const mux = [root, a, b];
        sockets.push(...mux.map((c) => c.socket));
        assert.equal(a.socket.io, root.socket.io, "/a is on the Manager of /");
        assert.equal(b.socket.io, root.socket.io, "/b is on the Manager of /");
        await Promise.all(mux.map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        const engine = root.socket.io.engine;
        assert.equal(engine.transport.name, transports[0]);
        for (const c of mux) assert.equal(c.socket.io.engine, engine, `${c.name}: the one engine`);
        assert.equal(await metric(relay, "relay_connected_sockets"), sessionsBefore + 1, "one Engine.IO session for three rooms");
        const ids = mux.map((c) => c.socket.id);
        assert.equal(new Set(ids).size, 3, `a socket id per room: ${ids}`);

        // Clients of their own, one per room.
        const own = ["/", "/a", "/b"].map((nsp) => separate(nsp, { name: `own ${nsp}` }));
        await Promise.all(own.map((c) => connected(c.socket, PATIENCE_MS, c.name)));

        const tag = newOffset("mux");
        for (let i = 0; i < 3; i++) {
          await send(root.socket, `${tag} root ${i}`);
          await send(a.socket, `${tag} a ${i}`);
          await send(own[2].socket, `${tag} b ${i}`);
          await send(b.socket, `${tag} b-mux ${i}`);
          await send(own[1].socket, `${tag} a-own ${i}`);
        }
        for (const [nsp, cs] of [
          ["/", [root, own[0]]],
          ["/a", [a, own[1]]],
          ["/b", [b, own[2]]],
        ]) {
          for (const c of cs) await assertSawRoom(relay, c, nsp);
        }
        assert.equal(root.messages.length, 3);
        assert.equal(a.messages.length, 6);
        assert.equal(b.messages.length, 6);
        // Still one connection: nothing reconnected meanwhile.
        assert.equal(root.socket.io.engine, engine);
        assert.equal(engine.readyState, "open");
      });

      it("12 concurrent senders across 5 rooms: every socket sees exactly its room's rows, in increasing id order, once", async () => {
        const rooms = ["/", "/c1", "/c-2", "/c_3", "/4c"];
        const watchMgr = manager();
        const sendMgr = manager();
        const watchers = [
          ...rooms.map((nsp) => roomSocket(watchMgr, nsp, { name: `mux watcher ${nsp}` })),
          ...rooms.map((nsp) => separate(nsp, { name: `own ws watcher ${nsp}`, transports: ["websocket"] })),
          ...rooms.map((nsp) => separate(nsp, { name: `own polling watcher ${nsp}`, transports: ["polling"] })),
        ];
        const senders = [
          ...rooms.map((nsp) => roomSocket(sendMgr, nsp, { name: `mux sender ${nsp}` })),
          ...Array.from({ length: 7 }, (_, i) => separate(rooms[i % 5], { name: `own sender ${i} ${rooms[i % 5]}`, transports: i % 2 ? ["polling"] : ["websocket"] })),
        ];
        const roomOf = new Map([...watchers, ...senders].map((c) => [c, c.name.split(" ").at(-1)]));
        await Promise.all([...watchers, ...senders].map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        for (const mgr of [watchMgr, sendMgr]) {
          const engines = new Set(rooms.map((nsp) => mgr.socket(nsp).io.engine.id));
          assert.equal(engines.size, 1, "one engine id per Manager");
        }

        const tag = newOffset("burst");
        await Promise.all(
          senders.map(async (s, i) => {
            for (let k = 0; k < 10; k++) await send(s.socket, `${tag} ${roomOf.get(s)} ${i}-${k}`);
          }),
        );
        const all = [];
        for (const c of [...watchers, ...senders]) {
          await assertSawRoom(relay, c, roomOf.get(c));
          for (let i = 1; i < c.messages.length; i++) assert.ok(c.messages[i].id > c.messages[i - 1].id, `${c.name}: ids increase`);
          assert.ok(c.messages.every((m) => !m.msg.startsWith(tag) || m.msg.startsWith(`${tag} ${roomOf.get(c)} `)), `${c.name}: only its room's burst`);
          if (c.name.startsWith("mux watcher")) all.push(...c.messages.map((m) => m.id));
        }
        assert.equal(new Set(all).size, all.length, "one global sequence: no id in two rooms");
        const burst = await query(relay, `SELECT COUNT(*) FROM messages WHERE content LIKE '${tag} %'`);
        assert.equal(Number(burst[0][0]), 120, "120 messages stored");
      });

      it("replays each room from auth.serverOffset (ids are one sequence: a room sees gaps), then live", async () => {
        const wa = separate("/pa", { serverOffset: NO_REPLAY, name: "writer /pa" });
        const wb = separate("/pb", { serverOffset: NO_REPLAY, name: "writer /pb" });
        await Promise.all([connected(wa.socket), connected(wb.socket)]);
        const tag = newOffset("replay");
        for (let i = 0; i < 4; i++) {
          await send(wa.socket, `${tag} a${i}`);
          if (i < 3) await send(wb.socket, `${tag} b${i}`);
        }
        await wa.waitForCount(4);
        await wb.waitForCount(3);
        const aIds = wa.messages.map((m) => m.id);
        const bIds = wb.messages.map((m) => m.id);
        // a0 < b0 < a1 < b1 < a2 < b2 < a3: each room's ids have gaps where the other room spoke.
        for (let i = 0; i < 3; i++) assert.ok(aIds[i] < bIds[i] && bIds[i] < aIds[i + 1], `interleaved ids a=${aIds} b=${bIds}`);

        // One Manager: /pa from b0 (an id of another room), /pb from a0, / from 0.
        const mgr = manager();
        const ra = roomSocket(mgr, "/pa", { serverOffset: bIds[0], name: "replay /pa" });
        const rb = roomSocket(mgr, "/pb", { serverOffset: aIds[0], name: "replay /pb" });
        const rr = roomSocket(mgr, "/", { serverOffset: 0, name: "replay /" });
        await Promise.all([ra, rb, rr].map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        await ra.waitForCount(3);
        await rb.waitForCount(3);
        await assertSawRoom(relay, rr, "/");
        await send(wa.socket, `${tag} a live`);
        await send(wb.socket, `${tag} b live`);
        await ra.waitForText(`${tag} a live`);
        await rb.waitForText(`${tag} b live`);
        assert.deepEqual(ra.messages.map((m) => m.msg), [`${tag} a1`, `${tag} a2`, `${tag} a3`, `${tag} a live`]);
        assert.deepEqual(ra.messages.slice(0, 3).map((m) => m.id), aIds.slice(1));
        assert.deepEqual(rb.messages.map((m) => m.msg), [`${tag} b0`, `${tag} b1`, `${tag} b2`, `${tag} b live`]);
        assert.deepEqual(rb.messages.slice(0, 3).map((m) => m.id), bIds);
        assert.ok(rr.messages.every((m) => !m.msg.startsWith(tag)), "/ got none of the rooms' messages");
      });

      it("a retried clientOffset is acked and stored once, within a room and across rooms", async () => {
        const mgr = manager();
        const da = roomSocket(mgr, "/da", { serverOffset: NO_REPLAY, name: "mux /da" });
        const db = roomSocket(mgr, "/db", { serverOffset: NO_REPLAY, name: "mux /db" });
        const wa = separate("/da", { serverOffset: NO_REPLAY, name: "own /da" });
        const wb = separate("/db", { serverOffset: NO_REPLAY, name: "own /db" });
        await Promise.all([da, db, wa, wb].map((c) => connected(c.socket, PATIENCE_MS, c.name)));

        const offset = newOffset("dup");
        const text = `dup ${offset}`;
        await send(da.socket, text, offset);
        await send(da.socket, text, offset); // the retry, same room
        await send(db.socket, text, offset); // the same offset in another room
        await send(wb.socket, `other text ${offset}`, offset); // and from another connection
        // Barriers: anything broadcast before them has arrived.
        await send(wa.socket, `barrier a ${offset}`);
        await send(wb.socket, `barrier b ${offset}`);
        await Promise.all([da, wa].map((c) => c.waitForText(`barrier a ${offset}`)));
        await Promise.all([db, wb].map((c) => c.waitForText(`barrier b ${offset}`)));
        for (const c of [da, wa]) assert.deepEqual(c.messages.map((m) => m.msg), [text, `barrier a ${offset}`], c.name);
        for (const c of [db, wb]) assert.deepEqual(c.messages.map((m) => m.msg), [`barrier b ${offset}`], c.name);
        const rows = await query(relay, `SELECT room, content FROM messages WHERE client_offset = '${offset}'`);
        assert.deepEqual(rows, [["da", text]], "stored once, in the room it was first said in");

        // The same new offset in both rooms at once: both acked, one row, broadcast in its room only.
        const race = newOffset("race");
        const acks = await Promise.all([
          emitAck(da.socket, ["chat message", `race a ${race}`, race]),
          emitAck(db.socket, ["chat message", `race b ${race}`, race]),
        ]);
        assert.deepEqual(acks, [[null], [null]]);
        const raced = await query(relay, `SELECT room, content FROM messages WHERE client_offset = '${race}'`);
        assert.equal(raced.length, 1, `one row: ${JSON.stringify(raced)}`);
        const [winner, winnerText] = raced[0];
        assert.equal(winnerText, `race ${winner === "da" ? "a" : "b"} ${race}`, "the row's room is where its text was said");
        await send(wa.socket, `barrier a2 ${race}`);
        await send(wb.socket, `barrier b2 ${race}`);
        await Promise.all([da, wa].map((c) => c.waitForText(`barrier a2 ${race}`)));
        await Promise.all([db, wb].map((c) => c.waitForText(`barrier b2 ${race}`)));
        for (const c of [da, wa, db, wb]) {
          const got = c.messages.filter((m) => m.msg.startsWith("race ")).map((m) => m.msg);
          const inWinner = (c === da || c === wa) === (winner === "da");
          assert.deepEqual(got, inWinner ? [winnerText] : [], `${c.name}: the raced message only in ${winner}`);
        }
      });

      it("history pages hold only the room's own messages, newest below `before`, ascending", async () => {
        const wa = separate("/ha", { serverOffset: NO_REPLAY, name: "writer /ha" });
        const wb = separate("/hb", { serverOffset: NO_REPLAY, name: "writer /hb" });
        await Promise.all([connected(wa.socket), connected(wb.socket)]);
        const tag = newOffset("hist");
        for (let i = 0; i < 5; i++) {
          await send(wa.socket, `${tag} a${i}`);
          await send(wb.socket, `${tag} b${i}`);
        }
        await wa.waitForCount(5);
        await wb.waitForCount(5);
        const top = wb.messages.at(-1).id + 1;
        const mgr = manager();
        const ha = roomSocket(mgr, "/ha", { serverOffset: NO_REPLAY, name: "pager /ha" });
        const hb = roomSocket(mgr, "/hb", { serverOffset: NO_REPLAY, name: "pager /hb" });
        const hr = roomSocket(mgr, "/", { serverOffset: NO_REPLAY, name: "pager /" });
        await Promise.all([ha, hb, hr].map((c) => connected(c.socket, PATIENCE_MS, c.name)));

        async function page(c, args) {
          const [err, reply] = await emitAck(c.socket, ["history", args]);
          assert.equal(err, null);
          return reply;
        }
        for (const [c, w] of [
          [ha, wa],
          [hb, wb],
        ]) {
          const expected = w.messages.map(({ id, msg }) => ({ id, msg }));
          const seen = [];
          let before = top;
          let more = true;
          let pages = 0;
          while (more) {
            const reply = await page(c, { before, limit: 2 });
            assert.ok(Array.isArray(reply.messages), JSON.stringify(reply));
            assert.ok(reply.messages.length <= 2);
            seen.unshift(...reply.messages);
            more = reply.more;
            if (reply.messages.length) before = reply.messages[0].id;
            assert.ok(++pages <= 4, `${c.name}: the pages end`);
          }
          assert.deepEqual(seen, expected, `${c.name}: its five messages over three pages`);
          assert.equal(pages, 3);
        }
        const rootPage = await page(hr, { before: top, limit: 1000 });
        assert.deepEqual(rootPage.messages, await roomRows(relay, "/"), "/'s history is /'s rows only");
        assert.equal(rootPage.more, false);
      });

      it("a dropped multiplexed connection recovers every room: recovered, same socket ids, exactly the missed messages", async () => {
        const rooms = ["/", "/ra", "/rb"];
        // The reconnect waits long enough for the writers to send while the Manager is away.
        const mgr = manager({ reconnectionDelay: 1000, reconnectionDelayMax: 1000, randomizationFactor: 0 });
        const readers = rooms.map((nsp) => roomSocket(mgr, nsp, { serverOffset: NO_REPLAY, name: `reader ${nsp}` }));
        const writers = rooms.map((nsp) => separate(nsp, { serverOffset: NO_REPLAY, name: `writer ${nsp}`, transports: ["websocket"] }));
        await Promise.all([...readers, ...writers].map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        for (const r of readers) assert.equal(r.socket.recovered, false, `${r.name}: a fresh connection is not a recovery`);
        const tag = newOffset("rec");
        const sent = rooms.map(() => []);
        let isBack = true;
        /** Sends 3 messages into each room; resolves with how many per room were acked while the Manager was away. */
        async function sendAll(label) {
          return Promise.all(
            writers.map(async (w, i) => {
              let whileAway = 0;
              for (let k = 0; k < 3; k++) {
                const text = `${tag} ${rooms[i]} ${label} ${k}`;
                await send(w.socket, text);
                sent[i].push(text);
                if (!isBack) whileAway++;
              }
              return whileAway;
            }),
          );
        }
        await sendAll("first");
        await Promise.all(readers.map((r, i) => r.waitForText(sent[i].at(-1))));
        const firstIds = readers.map((r) => r.messages[0].id);
        const socketIds = readers.map((r) => r.socket.id);
        for (let round = 0; round < 2; round++) {
          const engineId = mgr.engine.id;
          const down = Promise.all(readers.map((r) => disconnected(r.socket, PATIENCE_MS, r.name)));
          const back = Promise.all(readers.map((r) => nextConnect(r.socket, r.name)));
          isBack = false;
          back.then(() => (isBack = true));
          mgr.engine.close(); // the transport drops; the Manager reconnects on its own (1 s later)
          await down;
          const away = await sendAll(`missed ${round}`);
          // The premise: each room had messages acked while its reader was away (at least one).
          assert.ok(away.every((n) => n >= 1), `round ${round}: messages sent while the Manager was away: ${away}`);
          await back;
          assert.notEqual(mgr.engine.id, engineId, `round ${round}: a new Engine.IO connection`);
          for (const [i, r] of readers.entries()) {
            assert.equal(r.socket.recovered, true, `round ${round}: ${r.name} recovered`);
            assert.equal(r.socket.id, socketIds[i], `round ${round}: ${r.name} keeps its socket id`);
          }
          await sendAll(`live ${round}`);
          await Promise.all(readers.map((r, i) => r.waitForText(sent[i].at(-1))));
        }
        for (const [i, r] of readers.entries()) {
          assert.deepEqual(r.messages.map((m) => m.msg), sent[i], `${r.name}: every message of its room once, in order, across two drops`);
          await assertSawRoom(relay, r, rooms[i], { fromId: firstIds[i] });
        }
      });

      it("the tutorial on / is unchanged: a plain io(url) client", async () => {
        const plain = collect(io(relay.url), "plain io(url)");
        const other = separate("/", { serverOffset: NO_REPLAY, name: "other /" });
        const roomWatcher = separate("/a", { serverOffset: NO_REPLAY, name: "room /a" });
        sockets.push(plain.socket);
        await Promise.all([plain, other, roomWatcher].map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        const rows = await roomRows(relay, "/");
        assert.ok(rows.length > 0);
        await assertSawRoom(relay, plain, "/"); // no auth: the whole of /, none of the rooms
        const text = `tutorial ${newOffset()}`;
        const ack = await withTimeout(
          new Promise((resolve) => plain.socket.emit("chat message", text, newOffset("p"), (...args) => resolve(args))),
          PATIENCE_MS,
          "tutorial ack",
        );
        assert.deepEqual(ack, [], "ack() with no arguments");
        const got = await other.waitForText(text);
        const own = await plain.waitForText(text);
        assert.equal(got.id, own.id);
        assert.deepEqual(own.extra, [String(own.id)], "(msg, id, offset) as before");
        await send(roomWatcher.socket, `room barrier ${text}`); // a barrier: / was broadcast before it
        await roomWatcher.waitForText(`room barrier ${text}`);
        assert.ok(!roomWatcher.messages.some((m) => m.msg === text), "a room does not hear /");
      });

      it("GET /rooms lists the rooms with messages and their last id, / first, then by name", async () => {
        const writers = ["/z", "/a_b", "/a-b", "/ab", "/0x"].map((nsp) => separate(nsp, { serverOffset: NO_REPLAY, name: `writer ${nsp}` }));
        await Promise.all(writers.map((c) => connected(c.socket, PATIENCE_MS, c.name)));
        for (const w of writers) await send(w.socket, `hello ${w.name}`);
        // A room one only connected to, never spoke in, is not listed.
        const quiet = separate("/quiet", { serverOffset: NO_REPLAY });
        await connected(quiet.socket);
        const body = await getRooms(relay);
        assert.deepEqual(Object.keys(body), ["rooms"]);
        for (const r of body.rooms) assert.deepEqual(Object.keys(r).sort(), ["last", "room"]);
        assert.deepEqual(body, { rooms: await expectedRooms(relay) });
        const names = body.rooms.map((r) => r.room);
        assert.equal(names[0], "/");
        assert.ok(!names.includes("quiet"));
        assert.deepEqual(
          names.filter((n) => ["z", "a_b", "a-b", "ab", "0x"].includes(n)),
          ["0x", "a-b", "a_b", "ab", "z"],
          "by name (byte order)",
        );
      });
    });
  }
}

describe("room names, the 64-namespace cap and CONNECT during another room's replay (mysql store)", () => {
  const { relay, sockets } = relayFixture({ env: { MAX_MESSAGES_PER_SECOND: "0" } });
  const SEEDED = 3000;

  before(async () => {
    // Room x gets a few thousand messages, room y a few.
    const mgr = new Manager(relay.url, { transports: ["websocket"] });
    const x = mgr.socket("/x", { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS });
    const y = mgr.socket("/y", { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS });
    sockets.push(x, y);
    await Promise.all([connected(x), connected(y)]);
    for (let i = 0; i < SEEDED; i += 500) {
      const acks = await Promise.all(Array.from({ length: 500 }, (_, k) => emitAck(x, ["chat message", `x ${i + k}`, newOffset("seed")])));
      assert.ok(acks.every((a) => a.length === 1 && a[0] === null), "seeded");
      await send(y, `y ${i / 500}`);
    }
    x.disconnect();
    y.disconnect();
  });

  for (const [transportName, transports] of TRANSPORTS) {
    it(`invalid names get "Invalid namespace" while the Manager's valid rooms keep working (${transportName})`, async () => {
      const mgr = new Manager(relay.url, { transports, reconnectionDelay: 100 });
      const good = collect(mgr.socket("/ok", { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS }), "/ok");
      const root = collect(mgr.socket("/", { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS }), "/");
      sockets.push(good.socket, root.socket);
      await Promise.all([connected(good.socket), connected(root.socket)]);
      const engine = mgr.engine;
      const bad = ["/Bad", "/a b", "/..", `/${"a".repeat(49)}`, "/%61bc", "/-a", "/_a", "/a/b", "/a.b", "/\u00e9t\u00e9", "//", "/ok "];
      const errors = await Promise.all(
        bad.map((nsp) => {
          const s = mgr.socket(nsp, { auth: { serverOffset: 0 } });
          sockets.push(s);
          return nextConnectError(s, JSON.stringify(nsp)).then((err) => [nsp, err.message]);
        }),
      );
      assert.deepEqual(errors, bad.map((nsp) => [nsp, "Invalid namespace"]));
      // Edge names that are valid, on the same Manager.
      const edge = [`/${"a".repeat(48)}`, "/0-_z", "/9"].map((nsp) => collect(mgr.socket(nsp, { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS }), nsp));
      sockets.push(...edge.map((c) => c.socket));
      await Promise.all(edge.map((c) => connected(c.socket, PATIENCE_MS, c.name)));
      assert.equal(mgr.engine, engine, "the same connection");
      assert.equal(engine.readyState, "open");
      for (const c of [good, root, ...edge]) {
        assert.equal(c.socket.connected, true, `${c.name} still connected`);
        const text = `still here ${c.name} ${newOffset()}`;
        await send(c.socket, text);
        await c.waitForText(text);
      }
      assert.ok(!root.messages.some((m) => m.msg.includes("/ok")), "/ did not hear /ok");
    });

    it(`a CONNECT to y while x replays ${SEEDED} messages on the same Manager: both complete correctly (${transportName})`, async () => {
      const writer = makeClient(`${relay.url}/x`, { serverOffset: NO_REPLAY });
      const writerY = makeClient(`${relay.url}/y`, { serverOffset: NO_REPLAY });
      sockets.push(writer, writerY);
      await Promise.all([connected(writer), connected(writerY)]);
      const mgr = new Manager(relay.url, { transports, reconnectionDelay: 100 });
      // x's and y's CONNECTs go out together: y's arrives while x's replay is being read and sent.
      const x = collect(mgr.socket("/x", { auth: { serverOffset: 0 }, ...SOCKET_OPTS }), "replaying /x");
      const y = collect(mgr.socket("/y", { auth: { serverOffset: 0 }, ...SOCKET_OPTS }), "/y");
      sockets.push(x.socket, y.socket);
      // z's CONNECT goes out from x's first replayed message, before the rest of the replay is read.
      let z;
      let replayedAtZ = -1;
      x.socket.once("chat message", () => {
        replayedAtZ = x.messages.length;
        z = collect(mgr.socket("/z", { auth: { serverOffset: 0 }, ...SOCKET_OPTS }), "/z (connects mid-replay)");
        sockets.push(z.socket);
      });
      let yAt = -1;
      y.socket.once("connect", () => (yAt = x.messages.length));
      // Live traffic into x and y during the replay.
      const tag = newOffset("mid");
      await Promise.all(
        [writer, writerY].map(async (w, i) => {
          for (let k = 0; k < 20; k++) await send(w, `${tag} ${i ? "y" : "x"} live ${k}`);
        }),
      );
      await until(() => z, "x's first replayed message");
      await connected(z.socket, PATIENCE_MS, z.name);
      await send(z.socket, `${tag} z live`);
      await z.waitForText(`${tag} z live`);
      await y.waitForText(`${tag} y live 19`);
      await x.waitForText(`${tag} x live 19`);
      await assertSawRoom(relay, x, "/x");
      await assertSawRoom(relay, y, "/y");
      await assertSawRoom(relay, z, "/z");
      assert.ok(x.messages.length >= SEEDED + 20);
      assert.ok(replayedAtZ >= 1 && replayedAtZ < SEEDED, `z's CONNECT went out mid-replay (x had ${replayedAtZ})`);
      if (process.env.ROOMS_DIAG) console.error(`DIAG ${transportName}: y connected when x had ${yAt}; z created at ${replayedAtZ}`);
    });
  }

  it("a connection may be in at most 64 namespaces at once: the 65th CONNECT gets a connect_error", async () => {
    const mgr = new Manager(relay.url, { transports: ["websocket"], reconnectionDelay: 100 });
    const in64 = Array.from({ length: 64 }, (_, i) => mgr.socket(`/n${i}`, { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS }));
    sockets.push(...in64);
    await Promise.all(in64.map((s, i) => connected(s, PATIENCE_MS, `/n${i}`)));
    const engine = mgr.engine;
    const extra = mgr.socket("/n64", { auth: { serverOffset: NO_REPLAY }, ...SOCKET_OPTS });
    sockets.push(extra);
    const err = await nextConnectError(extra, "/n64");
    assert.ok(err instanceof Error && err.message.length > 0, `a connect_error with a message: ${err}`);
    assert.equal(mgr.engine, engine);
    assert.ok(in64.every((s) => s.connected), "the 64 stay connected");
    const last = collect(in64[63], "/n63");
    const text = `n63 ${newOffset()}`;
    await send(in64[63], text);
    await last.waitForText(text);
    // One leaves: now the 65th fits.
    in64[0].disconnect();
    extra.connect();
    await connected(extra, PATIENCE_MS, "/n64 after /n0 left");
    const e = collect(extra, "/n64");
    await send(extra, `n64 ${text}`);
    await e.waitForText(`n64 ${text}`);
    assert.equal(mgr.engine, engine, "the same connection throughout");
    assert.ok(in64.slice(1).every((s) => s.connected), "the others stayed");
  });
});

describe("ROOMS=general,help: only those rooms and /", () => {
  const { relay, sockets } = relayFixture({ env: { ROOMS: "general,help" } });

  for (const [transportName, transports] of TRANSPORTS) {
    it(`listed rooms connect, others get "Invalid namespace" (${transportName})`, async () => {
      const mgr = new Manager(relay.url, { transports, reconnectionDelay: 100 });
      const ok = ["/", "/general", "/help"].map((nsp) => collect(mgr.socket(nsp, { auth: { serverOffset: 0 }, ...SOCKET_OPTS }), nsp));
      sockets.push(...ok.map((c) => c.socket));
      await Promise.all(ok.map((c) => connected(c.socket, PATIENCE_MS, c.name)));
      const refused = ["/other", "/generalx", "/hel", "/Help"];
      const errors = await Promise.all(
        refused.map((nsp) => {
          const s = mgr.socket(nsp, { auth: { serverOffset: 0 } });
          sockets.push(s);
          return nextConnectError(s, nsp).then((e) => e.message);
        }),
      );
      assert.deepEqual(errors, refused.map(() => "Invalid namespace"));
      for (const c of ok) {
        const text = `${c.name} ${newOffset()}`;
        await send(c.socket, text);
        await c.waitForText(text);
        assert.ok(c.messages.every((m) => m.msg.startsWith(`${c.name} `)), `${c.name} hears only itself`);
      }
    });
  }

  it("GET /rooms lists them", async () => {
    const body = await getRooms(relay);
    assert.deepEqual(body.rooms.map((r) => r.room), ["/", "general", "help"]);
    assert.deepEqual(body, { rooms: await expectedRooms(relay) });
  });
});

for (const store of ["mysql", "sqlite"]) describe(`MAX_ROOMS=2 (${store} store)`, () => {
  const { relay, sockets } = relayFixture({ store, env: { MAX_ROOMS: "2", MAX_MESSAGES_PER_SECOND: "0" } });

  it("of five new rooms' concurrent first messages exactly two are stored; the others are refused, the two keep working", async () => {
    const rooms = ["/m1", "/m2", "/m3", "/m4", "/m5"];
    const mgr = new Manager(relay.url, { transports: ["websocket"], reconnectionDelay: 100 });
    const cs = rooms.map((nsp) => collect(mgr.socket(nsp, { auth: { serverOffset: 0 }, ...SOCKET_OPTS }), nsp));
    const watchers = rooms.map((nsp) => collect(makeClient(`${relay.url}${nsp}`, { transports: ["polling"] }), `watcher ${nsp}`));
    sockets.push(...cs.map((c) => c.socket), ...watchers.map((c) => c.socket));
    await Promise.all([...cs, ...watchers].map((c) => connected(c.socket, PATIENCE_MS, c.name)));
    const acks = await Promise.all(cs.map((c) => emitAck(c.socket, ["chat message", `first in ${c.name}`, newOffset("first")])));
    const okRooms = rooms.filter((_, i) => acks[i].length === 1 && acks[i][0] === null);
    const refusedRooms = rooms.filter((_, i) => !okRooms.includes(rooms[i]));
    assert.equal(okRooms.length, 2, `exactly two rooms accepted: ${JSON.stringify(acks)}`);
    for (const [i, nsp] of rooms.entries()) {
      if (okRooms.includes(nsp)) continue;
      assert.equal(acks[i].length, 2, `${nsp}: ${JSON.stringify(acks[i])}`);
      assert.equal(acks[i][0], null);
      assert.match(acks[i][1]?.error ?? "", /^too many rooms: /, `${nsp}: ${JSON.stringify(acks[i])}`);
    }
    // The two keep working; a refused room stays refused.
    for (const nsp of okRooms) {
      const c = cs[rooms.indexOf(nsp)];
      await send(c.socket, `second in ${nsp}`);
    }
    const again = await emitAck(cs[rooms.indexOf(refusedRooms[0])].socket, ["chat message", "again", newOffset("again")]);
    assert.match(again[1]?.error ?? "", /^too many rooms: /, JSON.stringify(again));
    for (const nsp of okRooms) {
      const w = watchers[rooms.indexOf(nsp)];
      await w.waitForText(`second in ${nsp}`);
      assert.deepEqual(w.messages.map((m) => m.msg), [`first in ${nsp}`, `second in ${nsp}`]);
    }
    // Barrier for the refused rooms: an accepted room's message arrived after theirs would have.
    for (const nsp of refusedRooms) assert.deepEqual(watchers[rooms.indexOf(nsp)].messages, [], `${nsp}: nothing broadcast`);
    const stored = await query(relay, "SELECT DISTINCT room FROM messages ORDER BY room");
    assert.deepEqual(stored.map((r) => r[0]), okRooms.map(roomName).sort());
    assert.deepEqual((await getRooms(relay)).rooms.map((r) => r.room), okRooms.map(roomName).sort());
  });
});
