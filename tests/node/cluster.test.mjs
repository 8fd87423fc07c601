// Cluster faults with the stock client (issue 11): three relays on one database and a Redis of
// the test's own, behind a round-robin TCP balancer of the test's own, as an nginx `upstream`
// would spread WebSocket clients. A node killed with SIGKILL under load, and a rolling restart
// (SIGTERM one node at a time, started again) under load: no acked message is lost, nothing is
// doubled, and every client ends with the table's ids, in order, once.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { io } from "socket.io-client";
import { startRelay, connected, collect, emitAck, newOffset, closeAll, mysqlExec, withTimeout, until } from "./helpers.mjs";

/** A metric of a relay, read from its `/metrics` (0 when absent). */
async function metric(relay, name) {
  const text = await (await fetch(`http://127.0.0.1:${relay.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A redis-server of the test's own; stopped by its PID. */
async function startRedis() {
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => (c.end(), resolve(true)));
      c.on("error", () => resolve(false));
    });
    if (ok) return { port, stop: () => proc.kill("SIGKILL") };
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("redis-server did not start");
}

/** A round-robin TCP balancer over `ports`: each connection goes to the next port that accepts. */
async function startBalancer(ports) {
  let next = 0;
  const open = new Set();
  const server = net.createServer((client) => {
    open.add(client);
    client.on("close", () => open.delete(client));
    client.on("error", () => client.destroy());
    client.pause();
    const tryPort = (attempt) => {
      if (attempt >= ports.length) return client.destroy();
      const port = ports[next++ % ports.length];
      const upstream = net.connect(port, "127.0.0.1");
      upstream.once("connect", () => {
        upstream.on("error", () => client.destroy());
        client.on("close", () => upstream.destroy());
        upstream.on("close", () => client.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      upstream.once("error", () => tryPort(attempt + 1));
    };
    tryPort(0);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      for (const c of open) c.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A stock client that keeps its replay offset as the tutorial's page does. */
function pageClient(url, name) {
  const socket = io(url, {
    transports: ["websocket"],
    auth: { serverOffset: 0 },
    ackTimeout: 3000,
    retries: 30,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  });
  const c = collect(socket, name);
  socket.on("chat message", (_msg, id) => {
    socket.auth.serverOffset = id;
  });
  return c;
}

/**
 * Inside a describe: a Redis of the suite's own (started before its tests), and what its tests
 * start — relays (`relays`, on database `dbName`), a `balancer`, client `sockets` — all stopped
 * and dropped after them.
 */
function clusterFixture() {
  const c = { redis: null, balancer: null, relays: [], sockets: [], dbName: null };
  before(async () => {
    c.redis = await startRedis();
  });
  after(async () => {
    closeAll(...c.sockets);
    await c.balancer?.close();
    for (const r of c.relays) await r.stop({ dropDatabase: false }).catch(() => {});
    if (c.dbName) await mysqlExec(`DROP DATABASE IF EXISTS \`${c.dbName}\``).catch(() => {});
    c.redis?.stop();
  });
  return c;
}

for (const fault of ["SIGKILL of one node", "a rolling restart of every node"]) {
  describe(`cluster of three, ${fault}, under load`, () => {
    const cluster = clusterFixture();

    it("no acked message is lost, nothing doubles, every client ends with the table", { timeout: 120000 }, async () => {
      const { relays, sockets } = cluster;
      const env = {
        CLUSTER_URL: `redis://127.0.0.1:${cluster.redis.port}`,
        CLUSTER_NAME: `c${Date.now()}`,
        MAX_MESSAGES_PER_SECOND: "0",
      };
      const first = await startRelay({ env });
      const dbName = (cluster.dbName = first.dbName);
      relays.push(first);
      for (let i = 1; i < 3; i++) relays.push(await startRelay({ dbName, env }));
      const ports = relays.map((r) => r.port);
      const balancer = (cluster.balancer = await startBalancer(ports));

      const clients = [];
      for (let i = 0; i < 12; i++) {
        const c = pageClient(balancer.url, `c${i}`);
        sockets.push(c.socket);
        clients.push(c);
      }
      await Promise.all(clients.map((c) => connected(c.socket, 15000, c.name)));

      // Six of them send all the time, each message after the previous one's ack.
      const acked = new Set();
      let sending = true;
      const senders = clients.slice(0, 6).map(async (c, i) => {
        let k = 0;
        while (sending) {
          const offset = `${c.name}-${k++}-${newOffset("x")}`;
          const ack = await emitAck(c.socket, ["chat message", `m ${i} ${k}`, offset], { ms: 100000 });
          assert.deepEqual(ack, [null], `${offset} acked`);
          acked.add(offset);
        }
      });
      const ackedAtLeast = async (n) => {
        const t0 = Date.now();
        while (acked.size < n) {
          assert.ok(Date.now() - t0 < 60000, `only ${acked.size} acks of ${n}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      await ackedAtLeast(30);

      if (fault.startsWith("SIGKILL")) {
        // Kill the sequencer, once the other nodes forward their messages to it: what it had
        // taken and not answered is committed by the nodes that forwarded it, once.
        let sequencer = -1;
        await until(async () => {
          const roles = await Promise.all(relays.map((r) => metric(r, "relay_sequencer")));
          const forwarded = await Promise.all(relays.map((r) => metric(r, "relay_forwarded_total")));
          sequencer = roles.indexOf(1);
          return sequencer >= 0 && forwarded.some((n) => n > 0);
        }, "a sequencer node, and messages forwarded to it");
        relays[sequencer].proc.kill("SIGKILL");
        await ackedAtLeast(acked.size + 60);
        // Another node took the lease over.
        const alive = relays.filter((_, i) => i !== sequencer);
        await until(async () => (await Promise.all(alive.map((r) => metric(r, "relay_sequencer")))).includes(1), "a new sequencer");
        await ackedAtLeast(acked.size + 30);
      } else {
        for (let i = 0; i < 3; i++) {
          const exit = await relays[i].stop({ dropDatabase: false });
          assert.equal(exit.code, 0, `node ${i} exits 0 on SIGTERM`);
          await ackedAtLeast(acked.size + 20);
          relays[i] = await startRelay({ dbName, env: { ...env, PORT: String(ports[i]) } });
        }
        await ackedAtLeast(acked.size + 20);
      }
      sending = false;
      await withTimeout(Promise.all(senders), 100000, "senders finish");

      const rows = (await mysqlExec(`SELECT id, client_offset FROM \`${dbName}\`.messages ORDER BY id`))
        .trim()
        .split("\n")
        .map((l) => l.split("\t"));
      const ids = rows.map(([id]) => Number(id));
      const stored = new Set(rows.map(([, offset]) => offset));
      assert.equal(stored.size, rows.length, "no clientOffset stored twice");
      for (const offset of acked) assert.ok(stored.has(offset), `acked ${offset} is stored`);
      for (const c of clients) {
        await c.waitForCount(ids.length, 60000);
        assert.deepEqual(
          c.messages.map((m) => m.id),
          ids,
          `${c.name}: the table, in order, once`,
        );
      }
    });
  });
}

describe("cluster of two, connection-state recovery on the other node", () => {
  const cluster = clusterFixture();

  it("a client recovers its socket id and exactly what it missed on whichever node it reaches", { timeout: 120000 }, async () => {
    const { relays, sockets } = cluster;
    const env = { CLUSTER_URL: `redis://127.0.0.1:${cluster.redis.port}`, CLUSTER_NAME: `r${Date.now()}`, MAX_MESSAGES_PER_SECOND: "0" };
    const first = await startRelay({ env });
    const dbName = (cluster.dbName = first.dbName);
    relays.push(first, await startRelay({ dbName, env }));
    // Round robin over two nodes: each reconnect of the reader lands on the other node.
    const balancer = (cluster.balancer = await startBalancer(relays.map((r) => r.port)));
    const reader = pageClient(balancer.url, "reader");
    sockets.push(reader.socket);
    await connected(reader.socket, 15000, "reader");
    const id = reader.socket.id;
    // The writer talks to the first node directly, so the balancer's turns stay the reader's.
    const writer = pageClient(relays[0].url, "writer");
    sockets.push(writer.socket);
    await connected(writer.socket, 15000, "writer");
    let sending = true;
    let n = 0;
    const traffic = (async () => {
      while (sending) {
        assert.deepEqual(await emitAck(writer.socket, ["chat message", `x ${n++}`, newOffset("x")], { ms: 60000 }), [null]);
      }
    })();
    for (let round = 0; round < 4; round++) {
      await reader.waitForCount(reader.messages.length + 5, 30000);
      const back = new Promise((resolve) => reader.socket.once("connect", resolve));
      reader.socket.io.engine.close();
      await withTimeout(back, 30000, `round ${round}: reconnect`);
      assert.equal(reader.socket.recovered, true, `round ${round}: recovered on node ${(round + 1) % 2}`);
      assert.equal(reader.socket.id, id, `round ${round}: the same socket id`);
    }
    await reader.waitForCount(reader.messages.length + 5, 30000);
    sending = false;
    await traffic;
    const ids = (await mysqlExec(`SELECT id FROM \`${dbName}\`.messages ORDER BY id`)).trim().split("\n").map(Number);
    await reader.waitForCount(ids.length, 30000);
    assert.deepEqual(
      reader.messages.map((m) => m.id),
      ids,
      "every message once, in order, across four recoveries on alternating nodes",
    );
  });
});
