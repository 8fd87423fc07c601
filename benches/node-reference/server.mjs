// The yardstick for relay's HTTP long-polling: the socket.io tutorial's chat on the stock Node
// server, with its default transports (polling, then WebSocket), and no database at all (an
// in-memory counter as the id), so every cost it shows is the server's own. The load tool starts
// it with `--reference node` (run `npm ci --prefix benches/node-reference` once first).
//
// It prints "relay listening on http://HOST:PORT" like relay, so the tool finds it the same way.
import { createServer } from "node:http";
import { Server } from "socket.io";

const server = createServer();
const io = new Server(server, { maxHttpBufferSize: 1e6 });
let id = 0;
io.on("connection", (socket) => {
  socket.on("chat message", (msg, clientOffset, callback) => {
    id += 1;
    io.emit("chat message", msg, id);
    if (typeof callback === "function") callback();
  });
});
server.listen(Number(process.env.PORT || 0), process.env.HOST || "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`relay listening on http://${address}:${port}`);
});
process.on("SIGTERM", () => process.exit(0));
