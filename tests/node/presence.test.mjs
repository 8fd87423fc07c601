// Presence and typing with the stock socket.io-client (protocol.md, "Presence and typing"), on
// WebSocket and on HTTP long-polling: a socket that sends `auth.presence: true` gets the room's
// state right after it connects and coalesced changes after it; one user in two rooms and two tabs
// counts once per room; "typing" reaches the room's other watchers, not its sender; with `meta`
// too, messages still carry their author; a socket that asks for nothing gets none of it.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { makeClient, connected, relayFixture, until, emitAck, newOffset, closeAll } from "./helpers.mjs";

const TRANSPORTS = [
  ["websocket", ["websocket"]],
  ["polling", ["polling"]],
];

/** Keeps a socket's presence as a page would: a set by id, and the last `online`. */
function watch(socket) {
  const seen = { people: new Map(), online: null, events: 0, typing: [] };
  socket.on("presence", (p) => {
    seen.events += 1;
    if (Array.isArray(p.users)) {
      seen.people = new Map(p.users.map((x) => [x.id, x]));
    }
    for (const x of p.joined || []) seen.people.set(x.id, x);
    for (const x of p.left || []) seen.people.delete(x.id);
    seen.online = p.online;
  });
  socket.on("typing", (p) => seen.typing.push(p));
  return seen;
}

const names = (seen) => [...seen.people.values()].map((p) => p.name).sort();

describe("presence with the stock client", () => {
  const { relay, sockets } = relayFixture({ store: "sqlite", env: { MAX_MESSAGES_PER_SECOND: "0" } });

  for (const [label, transports] of TRANSPORTS) {
    it(`people, not sockets, per room, and typing, over ${label}`, async () => {
      const room = `/p-${label}`;
      const opts = { transports, forceNew: true };
      const wat = makeClient(relay.url + room, { ...opts, auth: { presence: true, meta: true, name: "Wat" } });
      sockets.push(wat);
      const w = watch(wat);
      await connected(wat);
      await until(() => w.online === 1, "Wat's first presence: only Wat");
      assert.deepEqual(names(w), ["Wat"]);
      const me = [...w.people.values()][0];
      assert.equal(me.guest, true);
      assert.equal(me.user, null);

      // Ana: two rooms on one Manager (one connection), and a second tab in this room.
      const manager = new Manager(relay.url, { transports, forceNew: true });
      const anaHere = manager.socket(room, { auth: { name: "Ana", presence: true } });
      const anaMain = manager.socket("/", { auth: { name: "Ana", presence: true } });
      const a = watch(anaHere);
      const aMain = watch(anaMain);
      // Nobody asks for nothing: a quiet socket gets no presence or typing event.
      const quiet = makeClient(relay.url + room, opts);
      sockets.push(anaHere, anaMain, quiet);
      let quietEvents = 0;
      quiet.onAny((event) => {
        if (event === "presence" || event === "typing") quietEvents += 1;
      });
      await Promise.all([connected(anaHere), connected(anaMain), connected(quiet)]);
      await until(() => w.online === 3, "Wat, Ana and the quiet guest");
      await until(() => aMain.online !== null, "Ana's presence in /");
      assert.ok(aMain.online >= 1, "/ counts its own sockets apart");
      assert.ok(!names(aMain).includes("Wat"), "Wat is not in /");
      assert.deepEqual(names(w).filter(Boolean), ["Ana", "Wat"]);

      // Ana types: Wat hears it; Ana's own socket does not; the quiet one hears nothing.
      anaHere.emit("typing");
      await until(() => w.typing.length === 1, "Wat hears Ana typing");
      assert.equal(w.typing[0].name, "Ana");
      assert.equal(w.typing[0].guest, true);
      // Messages still carry their author with meta.
      const got = new Promise((resolve) => wat.once("chat message", (msg, id, meta) => resolve({ msg, id, meta })));
      const reply = await emitAck(anaHere, ["chat message", "hi from Ana", newOffset("pr")]);
      assert.ok(!reply.some((x) => x && x.error), JSON.stringify(reply));
      const message = await got;
      assert.equal(message.meta.name, "Ana");
      await new Promise((resolve) => setTimeout(resolve, 1200));
      assert.equal(a.typing.length, 0, "never echoed to its sender");
      assert.equal(quietEvents, 0, "no opt-in, no presence bytes");

      // Ana's whole connection goes: she leaves both rooms.
      const before = w.events;
      anaHere.disconnect();
      anaMain.disconnect();
      await until(() => w.online === 2, "Ana left");
      assert.deepEqual(names(w).filter(Boolean), ["Wat"]);
      assert.ok(w.events - before <= 2, `one change, maybe two: ${w.events - before}`);
      closeAll(wat, quiet);
    });
  }
});
