// The server API with stock socket.io clients watching (protocol.md, "Server API" and
// "Moderation"): the OpenAPI document passes a standard validator (@apidevtools/swagger-parser);
// a message published through the API reaches the stock client as any message does, on WebSocket
// and polling; its deletion reaches the clients that had it, in order between the messages around
// it, and a client that recovers across the deletion is told of it.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import SwaggerParser from "@apidevtools/swagger-parser";
import { makeClient, connected, relayFixture, until, closeAll } from "./helpers.mjs";

const KEY = "node-api-key";

describe("the server API with stock clients", () => {
  const { relay, sockets } = relayFixture({ store: "sqlite", env: { API_KEYS: KEY, MAX_MESSAGES_PER_SECOND: "0" } });

  async function api(method, path, body) {
    const res = await fetch(`${relay.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${KEY}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json() };
  }

  it("serves an OpenAPI 3.1 document a standard validator accepts", async () => {
    const res = await fetch(`${relay.url}/api/v1/openapi.json`);
    assert.equal(res.status, 200);
    const doc = await res.json();
    assert.equal(doc.openapi, "3.1.0");
    const valid = await SwaggerParser.validate(structuredClone(doc));
    for (const path of ["/messages", "/messages/{id}", "/rooms", "/presence", "/bans", "/bans/{id}", "/disconnect"]) {
      assert.ok(valid.paths[path], `documents ${path}`);
    }
  });

  for (const transports of [["websocket"], ["polling"]]) {
    it(`a published message and its deletion reach stock clients in order (${transports[0]})`, async () => {
      // No replay: only what happens from now on.
      const watcher = makeClient(relay.url, { transports, serverOffset: Number.MAX_SAFE_INTEGER });
      sockets.push(watcher);
      const seen = [];
      watcher.on("chat message", (msg, id) => seen.push(["message", msg, id]));
      watcher.on("chat deleted", (id) => seen.push(["deleted", id]));
      await connected(watcher);
      const tag = transports[0];
      const ids = [];
      for (const text of [`${tag} one`, `${tag} spam`]) {
        const r = await api("POST", "/api/v1/messages", { content: text, idempotency_key: `${tag}-${text}` });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        ids.push(r.body.id);
      }
      await until(() => seen.length === 2, "the two messages");
      const del = await api("DELETE", `/api/v1/messages/${ids[1]}`);
      assert.deepEqual(del, { status: 200, body: { id: ids[1], deleted: true } });
      const after = await api("POST", "/api/v1/messages", { content: `${tag} three`, idempotency_key: `${tag}-three` });
      await until(() => seen.length === 4, "the deletion and the next message");
      assert.deepEqual(seen, [
        ["message", `${tag} one`, ids[0]],
        ["message", `${tag} spam`, ids[1]],
        ["deleted", ids[1]],
        ["message", `${tag} three`, after.body.id],
      ]);
      closeAll(watcher);
    });
  }

  it("a client that recovers across a deletion of a message it had is told of it", async () => {
    const client = makeClient(relay.url, { transports: ["websocket"], serverOffset: Number.MAX_SAFE_INTEGER });
    sockets.push(client);
    const seen = [];
    client.on("chat message", (msg, id) => seen.push(["message", msg, id]));
    client.on("chat deleted", (id) => seen.push(["deleted", id]));
    await connected(client);
    const r = await api("POST", "/api/v1/messages", { content: "to be deleted while away", idempotency_key: "away-1" });
    await until(() => seen.some(([, , id]) => id === r.body.id), "the message");
    // The connection drops; the message is deleted meanwhile; the client comes back.
    client.io.engine.close();
    await until(() => !client.connected, "disconnected");
    await api("DELETE", `/api/v1/messages/${r.body.id}`);
    await connected(client);
    assert.equal(client.recovered, true, "connection-state recovery");
    await until(() => seen.some(([kind, id]) => kind === "deleted" && id === r.body.id), "the deletion after recovery");
    // A new client never had it: neither the message nor its deletion in its replay.
    const late = makeClient(relay.url, { transports: ["websocket"] });
    sockets.push(late);
    const lateSeen = [];
    late.on("chat message", (msg, id) => lateSeen.push(id));
    late.on("chat deleted", (id) => lateSeen.push(`deleted ${id}`));
    await connected(late);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(!lateSeen.includes(r.body.id) && !lateSeen.includes(`deleted ${r.body.id}`), JSON.stringify(lateSeen));
    closeAll(client, late);
  });
});
