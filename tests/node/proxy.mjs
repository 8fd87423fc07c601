// A TCP proxy in front of the database server that a test can cut and restore
// (the Node counterpart of the proxy in tests/outage.rs).
//
// cut(): every piped connection is destroyed at once (both sides) and new
// connections are refused (destroyed as soon as they are accepted) until
// restore(). close() stops listening and destroys everything.
import net from "node:net";

/**
 * Starts a proxy on 127.0.0.1 (a free port) that forwards to `host:port`.
 * Resolves with {port, cut(), restore(), close(), isUp(), stats}.
 */
export async function startProxy({ host = "127.0.0.1", port: targetPort = 3306 } = {}) {
  let up = true;
  const pipes = new Set();
  const stats = { accepted: 0, refused: 0, cut: 0 };

  const server = net.createServer((client) => {
    if (!up) {
      stats.refused++;
      client.destroy();
      return;
    }
    stats.accepted++;
    const upstream = net.connect(targetPort, host);
    const pair = { client, upstream };
    pipes.add(pair);
    const end = () => {
      pipes.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

  function destroyAll() {
    for (const { client, upstream } of [...pipes]) {
      client.destroy();
      upstream.destroy();
    }
    pipes.clear();
  }

  return {
    port: server.address().port,
    stats,
    isUp: () => up,
    /** Drops every open connection and refuses new ones. */
    cut() {
      up = false;
      stats.cut += pipes.size;
      destroyAll();
    },
    /** Accepts (and forwards) new connections again. */
    restore() {
      up = true;
    },
    /** Stops listening and drops everything. */
    close() {
      up = false;
      destroyAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
