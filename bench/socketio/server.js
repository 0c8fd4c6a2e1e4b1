// The socket.io peer of `bench channels` (issue 23) and `bench presence`
// (issue 24): socket.io 4.8 with rooms, one process a node, on Node.js 20.
// Installed by `cargo xtask bench --channels` (or `--presence`) into
// target/tools/socketio (NODE_PATH points there).
//
// A client joins a room with the event `join` (the room's name) and is told
// `joined` (the same name) once it is in. A publication comes in over HTTP,
// `POST /publish/ROOM` with a JSON body, and is emitted to the room as the
// event `pub`: `io.to(room).emit("pub", body)`, so socket.io encodes the
// packet once for the room. With REDIS_URL set, the rooms span every node
// through `@socket.io/redis-adapter` (node-redis clients, pub and sub).
//
// Presence (issue 24), what socket.io offers for "who is in this room":
// `io.in(room).fetchSockets()`, which with the redis adapter asks every
// other node over Redis pub/sub and waits for their answers.
// `GET /presence_stats/ROOM` answers `{"clients":n}`, its length;
// `GET /presence/ROOM` the first LIST_AT_MOST sockets' ids
// (`{"clients":[{"client_id":…}],"truncated":true}` past it), as our
// server's `--max-presence-answer` truncates its list. Each is one call of
// `fetchSockets()`: socket.io has no count without the sockets.
//
// It listens on port 0 on loopback and prints `{"port":N}` as its first
// line on stdout, so no port is ever fixed.

const http = require("node:http");
const { Server } = require("socket.io");

// As our server's `--max-presence-answer` in `bench presence`.
const LIST_AT_MOST = 1000;

// Answers GET /presence_stats/ROOM and /presence/ROOM (see above).
function presence(io, req, res) {
  const match = /^\/(presence|presence_stats)\/([^/?]+)$/.exec(req.url || "");
  if (req.method !== "GET" || !match) {
    return false;
  }
  const room = decodeURIComponent(match[2]);
  io.in(room)
    .fetchSockets()
    .then((sockets) => {
      let body;
      if (match[1] === "presence_stats") {
        body = { clients: sockets.length };
      } else {
        body = { clients: sockets.slice(0, LIST_AT_MOST).map((s) => ({ client_id: s.id })) };
        if (sockets.length > LIST_AT_MOST) {
          body.truncated = true;
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
    })
    .catch((err) => {
      res.writeHead(504, { "content-type": "text/plain" }).end(String(err));
    });
  return true;
}

async function main() {
  const server = http.createServer((req, res) => {
    if (presence(io, req, res)) {
      return;
    }
    const match = /^\/publish\/([^/?]+)$/.exec(req.url || "");
    if (req.method !== "POST" || !match) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch (err) {
        res.writeHead(400).end();
        return;
      }
      io.to(decodeURIComponent(match[1])).emit("pub", body);
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  // The WebSocket transport only, as our load generator speaks it; the
  // defaults otherwise (a ping every 25 s, answered by the clients).
  const io = new Server(server, { transports: ["websocket"], serveClient: false });
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    socket.on("join", (room) => {
      socket.join(String(room));
      socket.emit("joined", String(room));
    });
  });
  server.listen(0, "127.0.0.1", () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
