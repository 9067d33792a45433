'use strict';
// Peer echo server for scripts/bench: the Node `ws` library (Debian's
// node-ws), echoing every message with its type. Usage:
//   node scripts/peer-ws-echo.js PORT [HOST]
// Prints "listening" on stdout once the socket is open.
let ws;
try {
  ws = require('ws');
} catch (e) {
  ws = require('/usr/share/nodejs/ws'); // Debian's path, not on a non-Debian node's search path
}
const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node peer-ws-echo.js PORT [HOST]');
  process.exit(2);
}
const wss = new ws.WebSocketServer({
  host,
  port,
  backlog: 511,              // as wsechod's listen_backlog default
  perMessageDeflate: false,  // wsechod does not compress either
  clientTracking: false,
  maxPayload: 16 * 1024 * 1024, // as wsechod's max_message_size default
});
wss.on('connection', (sock) => {
  sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary }));
  sock.on('error', () => {});
});
wss.on('listening', () => console.log('listening'));
wss.on('error', (err) => {
  console.error(`peer-ws-echo: ${err.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
