// Shared helpers for the relay end-to-end suites (node:test).
//
// startRelay() runs the real server binary (target/debug/relay, built by
// `cargo build` in the repository root) on a free port with a fresh database,
// and removes that database again in stop(). The store is chosen per call
// (`store`): "mysql" (a fresh MariaDB database), "sqlite" (a fresh SQLite file
// in the temporary directory) or "default" (no DATABASE_URL and no STATIC_DIR,
// run from a fresh temporary directory: relay's out-of-the-box SQLite file and
// built-in page).
//
// Names: every database and temporary directory is `relay_node_<checkout>_<hex>`,
// where <checkout> (checkoutTag()) is the same for every run of one checkout and
// differs between checkouts, so `tests/run` clears what an interrupted run of
// this checkout left and never touches another checkout's.
//
// Waits: every wait is for a condition; PATIENCE_MS only bounds how long a test
// goes without what it waits for before it fails, sized for a busy machine.
//
// Environment knobs:
//   RELAY_BIN             path of the server binary (default: <repo>/target/debug/relay)
//   RELAY_TEST_MYSQL_URL  server URL without database (default: mysql://root@127.0.0.1:3306)
//   TEST_LOG              when set, the server's stderr is forwarded to this process' stderr

import { before, after } from "node:test";
import { spawn, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, realpathSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const RELAY_BIN = process.env.RELAY_BIN
  ? path.resolve(process.env.RELAY_BIN)
  : path.join(REPO_ROOT, "target", "debug", "relay");
const MYSQL_URL = (process.env.RELAY_TEST_MYSQL_URL || "mysql://root@127.0.0.1:3306").replace(/\/+$/, "");

/** How long a test waits for what it expects (a connect, an ack, a message) before it fails. */
export const PATIENCE_MS = 30000;
const STARTUP_TIMEOUT_MS = 60000;
const STOP_TIMEOUT_MS = 30000;

/**
 * This checkout's tag: FNV-1a (32 bit) of the checkout's canonical absolute path,
 * as 8 hex digits, the same value tests/common/mod.rs and tests/run compute.
 */
export function checkoutTag() {
  const bytes = Buffer.from(realpathSync(REPO_ROOT).replace(/\/+$/, ""), "utf8");
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** A fresh database (or SQLite directory) name of this checkout. */
export function freshDbName() {
  return `relay_node_${checkoutTag()}_${randomBytes(6).toString("hex")}`;
}

/** Every server still running; killed if this test process exits early. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/**
 * Rejects with `message` if `promise` has not settled within `ms`.
 * The timer is cleared either way so it never keeps the process alive.
 */
export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${message}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function mysqlCliArgs() {
  const url = new URL(MYSQL_URL);
  const args = ["-h", url.hostname || "127.0.0.1", "-P", url.port || "3306", "-u", decodeURIComponent(url.username || "root")];
  if (url.password) args.push(`-p${decodeURIComponent(url.password)}`);
  return args;
}

/** Runs one SQL statement with the mariadb CLI; resolves with its stdout. */
export function mysqlExec(sql) {
  return new Promise((resolve, reject) => {
    execFile("mariadb", [...mysqlCliArgs(), "--batch", "--skip-column-names", "-e", sql], { timeout: PATIENCE_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`mariadb -e ${JSON.stringify(sql)} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * Starts the relay server. Resolves with {url, port, dbName, proc, stop()} once
 * the server printed "relay listening on http://...". Pass `dbName` to reuse
 * the database of an earlier run (a restart); stop({dropDatabase: false})
 * keeps it.
 */
export async function startRelay({ env = {}, dbName: reuseDb, store = "mysql" } = {}) {
  if (!existsSync(RELAY_BIN)) {
    throw new Error(`relay binary not found at ${RELAY_BIN}: run \`cargo build\` in the repository root first (or set RELAY_BIN)`);
  }
  const dbName = reuseDb || freshDbName();
  // SQLite stores live in a directory of their own (the working directory for "default").
  const dir = path.join(os.tmpdir(), dbName);
  const storeEnv = { ...process.env };
  delete storeEnv.DATABASE_URL;
  let cwd = REPO_ROOT;
  if (store === "mysql") {
    storeEnv.DATABASE_URL = `${MYSQL_URL}/${dbName}`;
  } else if (store === "sqlite") {
    storeEnv.DATABASE_URL = `sqlite:${path.join(dir, "chat.db")}`;
  } else if (store === "default") {
    mkdirSync(dir, { recursive: true });
    cwd = dir;
    delete storeEnv.STATIC_DIR; // and the page built into relay
  } else {
    throw new Error(`unknown store ${store}`);
  }
  const dropDatabase = async () => {
    if (store === "mysql") await mysqlExec(`DROP DATABASE IF EXISTS \`${dbName}\``);
    else rmSync(dir, { recursive: true, force: true });
  };
  const proc = spawn(RELAY_BIN, [], {
    cwd,
    env: {
      ...storeEnv,
      PORT: "0",
      HOST: "127.0.0.1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(proc);

  let stderrTail = "";
  let stdoutAll = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (chunk) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
    if (process.env.TEST_LOG) process.stderr.write(chunk);
  });

  const exited = new Promise((resolve) => {
    proc.once("exit", (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    });
  });

  const listening = new Promise((resolve, reject) => {
    proc.once("error", (err) => reject(new Error(`could not start ${RELAY_BIN}: ${err.message}`)));
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (chunk) => {
      if (stdoutAll.length < 8000) stdoutAll += chunk;
      const m = /listening on (http:\/\/[^\s]+)/.exec(stdoutAll);
      if (m) resolve(m[1].replace(/\/+$/, ""));
    });
    exited.then(({ code, signal }) =>
      reject(
        new Error(
          `relay exited before listening (code ${code}, signal ${signal}).\nstdout:\n${stdoutAll}\nstderr (tail):\n${stderrTail}`,
        ),
      ),
    );
  });

  let url;
  try {
    url = await withTimeout(listening, STARTUP_TIMEOUT_MS, `relay did not print "listening on http://..." (stderr tail:\n${stderrTail})`);
  } catch (err) {
    proc.kill("SIGKILL");
    await exited;
    await dropDatabase().catch(() => {});
    throw err;
  }

  let stopping = null;
  async function stop({ dropDatabase: drop = true } = {}) {
    if (stopping) return stopping;
    stopping = (async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      let result;
      try {
        result = await withTimeout(exited, STOP_TIMEOUT_MS, "relay did not exit after SIGTERM");
      } catch (err) {
        proc.kill("SIGKILL");
        await exited;
        await dropDatabase().catch(() => {});
        throw err;
      }
      if (drop) await dropDatabase();
      return result;
    })();
    return stopping;
  }

  return { url, port: Number(new URL(url).port), dbName, store, proc, stop, drop: dropDatabase, stderrTail: () => stderrTail };
}

/**
 * Inside a describe: a relay started with `options` (as startRelay) before the suite's tests and
 * stopped after them, and `sockets`, the clients the tests open, closed after them. `relay` reads
 * through to the started relay (`relay.url`, `relay.dbName`, …) once `before` has run.
 */
export function relayFixture(options = {}) {
  const sockets = [];
  let started = null;
  before(async () => {
    started = await startRelay(options);
  });
  after(async () => {
    closeAll(...sockets);
    if (started) await started.stop();
  });
  const relay = new Proxy({}, { get: (_, key) => started?.[key] });
  return { relay, sockets };
}

/**
 * Inside a describe whose tests restart relay on one database: `relays`, the processes they start
 * (the first one's database is dropped), and `sockets`, their clients; all stopped, newest first,
 * and closed after the tests.
 */
export function restartFixture() {
  const relays = [];
  const sockets = [];
  after(async () => {
    closeAll(...sockets);
    for (const r of [...relays].reverse()) await r.stop().catch(() => {});
    await relays[0]?.drop().catch(() => {});
  });
  return { relays, sockets };
}

/** A stock socket.io client configured like the tutorial page (WebSocket only, unless `transports` is given). */
export function makeClient(url, { serverOffset = 0, ...opts } = {}) {
  return io(url, {
    transports: ["websocket"],
    auth: { serverOffset },
    ackTimeout: 10000,
    retries: 3,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    ...opts,
  });
}

/**
 * Resolves once `predicate()` (sync or async) is true, checking every 20 ms;
 * rejects after `ms` without it.
 */
export async function until(predicate, what, ms = PATIENCE_MS) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Resolves once `socket` is connected (now or later). */
export function connected(socket, ms = PATIENCE_MS, what = "client") {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect;
  let onError;
  let lastError = "";
  const p = new Promise((resolve) => {
    onConnect = () => resolve(socket);
    onError = (err) => {
      lastError = err && err.message ? err.message : String(err);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
  return withTimeout(p, ms, `${what} did not connect`)
    .catch((err) => {
      throw new Error(`${err.message}${lastError ? ` (last connect_error: ${lastError})` : ""}`);
    })
    .finally(() => {
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    });
}

/** Resolves once `socket` has disconnected (now or later). */
export function disconnected(socket, ms = PATIENCE_MS, what = "client") {
  if (!socket.connected) return Promise.resolve();
  let handler;
  const p = new Promise((resolve) => {
    handler = (reason) => resolve(reason);
    socket.once("disconnect", handler);
  });
  return withTimeout(p, ms, `${what} did not disconnect`).finally(() => socket.off("disconnect", handler));
}

/**
 * Records every "chat message" a socket receives, as {msg, id}, plus a
 * shared `log` of {type: "msg" | "ack", ...} entries so tests can check order.
 */
export function collect(socket, name = "client") {
  const messages = [];
  const log = [];
  const waiters = new Set();
  socket.on("chat message", (msg, id, ...rest) => {
    const entry = { msg, id, extra: rest };
    messages.push(entry);
    log.push({ type: "msg", ...entry });
    for (const w of [...waiters]) w();
  });
  return {
    name,
    socket,
    messages,
    log,
    /** messages received after index `from`. */
    since(from) {
      return messages.slice(from);
    },
    /** Waits until predicate(messages) is true. */
    waitUntil(predicate, description, ms = PATIENCE_MS) {
      if (predicate(messages)) return Promise.resolve(messages);
      let check;
      const p = new Promise((resolve) => {
        check = () => {
          if (predicate(messages)) resolve(messages);
        };
        waiters.add(check);
      });
      return withTimeout(p, ms, `${name}: ${description} (has ${messages.length} messages; last: ${JSON.stringify(messages.slice(-3))})`).finally(() =>
        waiters.delete(check),
      );
    },
    /** Waits until at least `count` messages arrived in total. */
    waitForCount(count, ms = PATIENCE_MS) {
      return this.waitUntil((m) => m.length >= count, `waiting for ${count} messages`, ms);
    },
    /** Waits for a message with content `text`; resolves with it. */
    async waitForText(text, ms = PATIENCE_MS) {
      await this.waitUntil((m) => m.some((e) => e.msg === text), `waiting for message ${JSON.stringify(text)}`, ms);
      return messages.find((e) => e.msg === text);
    },
  };
}

/**
 * Emits with an ack callback; resolves with the callback's arguments as an
 * array (with `retries` set, a successful ack is [null, ...serverArgs]).
 * If `log` is given, an {type: "ack"} entry is appended when the ack arrives.
 */
export function emitAck(socket, args, { ms = PATIENCE_MS, log } = {}) {
  const p = new Promise((resolve) => {
    socket.emit(...args, (...ackArgs) => {
      if (log) log.push({ type: "ack", args: ackArgs });
      resolve(ackArgs);
    });
  });
  return withTimeout(p, ms, `no ack for emit ${JSON.stringify(args).slice(0, 200)}`);
}

let offsetCounter = 0;
const offsetPrefix = randomBytes(4).toString("hex");
/** A fresh clientOffset, unique within this test process. */
export function newOffset(tag = "t") {
  return `${tag}-${offsetPrefix}-${offsetCounter++}`;
}

/** Closes clients without throwing. */
export function closeAll(...sockets) {
  for (const s of sockets) {
    try {
      s?.disconnect();
    } catch {
      // ignore
    }
  }
}

/**
 * A stock client that keeps socket.auth.serverOffset at the last id it
 * received, as the page does, so a reconnect resumes where it stopped.
 * Returns its collector (see collect()); the socket is `.socket`.
 */
export function pageLikeClient(url, name, opts = {}) {
  const socket = makeClient(url, opts);
  const c = collect(socket, name);
  socket.on("chat message", (_msg, id) => {
    socket.auth.serverOffset = id;
  });
  return c;
}

/** The Chromium the page tests drive (`CHROMIUM_PATH`, else Debian's). */
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

/**
 * Starts headless Chromium for the page tests through playwright-core, or fails with how to get
 * it. (Imported lazily: only the page tests need playwright.)
 */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM_PATH`);
  }
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
    timeout: 2 * PATIENCE_MS,
  });
}
