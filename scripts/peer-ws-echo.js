'use strict';
// Peer echo server for scripts/bench: the Node `ws` library (Debian's
// node-ws), echoing every message with its type. Usage:
//   node scripts/peer-ws-echo.js PORT [HOST [CERT KEY]]
// With CERT and KEY (PEM files) it serves wss:// through Node's https.
// PEER_DEFLATE=1 in the environment turns permessage-deflate on, as
// scripts/bench --deflate sets wsechod: no context takeover either way,
// zlib level 1, messages under 64 bytes sent plain.
// Prints "listening" on stdout once the socket is open.
let ws;
try {
  ws = require('ws');
} catch (e) {
  ws = require('/usr/share/nodejs/ws'); // Debian's path, not on a non-Debian node's search path
}
const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const [cert, key] = process.argv.slice(4, 6);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node peer-ws-echo.js PORT [HOST [CERT KEY]]');
  process.exit(2);
}
const tls = cert && key
  ? require('https').createServer({ cert: require('fs').readFileSync(cert),
                                    key: require('fs').readFileSync(key) })
  : null;
const wss = new ws.WebSocketServer({
  ...(tls ? { server: tls } : { host, port }),
  backlog: 511,              // as wsechod's listen_backlog default
  perMessageDeflate: process.env.PEER_DEFLATE === '1'
    ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 64,
        zlibDeflateOptions: { level: 1 } }
    : false,                 // as wsechod's default
  clientTracking: false,
  maxPayload: 16 * 1024 * 1024, // as wsechod's max_message_size default
});
wss.on('connection', (sock) => {
  sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary }));
  sock.on('error', () => {});
});
if (tls) tls.listen(port, host, 511, () => console.log('listening'));
else wss.on('listening', () => console.log('listening'));
wss.on('error', (err) => {
  console.error(`peer-ws-echo: ${err.message}`);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
