"""wss through wsechod's own TLS 1.3 record layer (tls.records: wsechod,
the default: OpenSSL does the handshake, src/tlsown.c the records): other
TLS stacks talk to it (Python's ssl in asyncio and over MemoryBIO, gnutls-cli,
openssl s_client, Node, headless Chromium), KeyUpdates both ways, a record
tampered with, a byte per TCP segment, and the connections moving on reload
and binary upgrade with their keys; records: openssl and TLS 1.2 stay with
OpenSSL and with their worker. Certificates are made at test time."""

import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest
import websockets

from conftest import (WORKER_RE, accept_for, children, cmdline, established_inodes, make_key,
                      pick_free_port, pid_alive, run_async, run_cli, socket_inodes, wait_until,
                      ws_request)
from test_handoff import read_pid, stop_master
from test_status import scrape, val
from test_tls import client_ctx, make_cert

OPENSSL = shutil.which("openssl")
GNUTLS_CLI = shutil.which("gnutls-cli")
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


# ---------------------------------------------------------------- the server

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tlsrec-cert")
    return make_cert(d, "a.test", "ecdsa")


@pytest.fixture
def wss_server(server_factory, cert, tmp_path):
    """make(workers=2, records=None, status=False, access_log=False, **config):
    a server with a plain listener (srv.port) and a TLS one (srv.tport),
    reload handoff on (the product default)."""
    def make(workers=2, records=None, status=False, access_log=False, **kw):
        kw.setdefault("reload_handoff", None)
        kw.setdefault("shutdown_timeout", "30s")   # an old process that kept a connection would stay
        if status:
            kw["status"] = {"listen": f"127.0.0.1:{pick_free_port()}"}
        srv = server_factory(workers=workers, start=False, **kw)
        srv.tport = pick_free_port()
        tls = {"certificate": str(cert[0]), "key": str(cert[1])}
        if records is not None:
            tls["records"] = records
        srv.cfg["listen"] = [f"127.0.0.1:{srv.port}", {"address": f"127.0.0.1:{srv.tport}",
                                                       "tls": tls}]
        if access_log:
            srv.cfg["access_log"] = str(tmp_path / "access.log")
            srv.cfg["access_log_format"] = "json"
        srv.write_config(srv.cfg)
        srv.start()
        if status:
            srv.sport = int(kw["status"]["listen"].rsplit(":", 1)[1])
        return srv
    return make


def wss(srv, path="/", version=None, **kw):
    ctx = client_ctx()
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    for k, v in (("max_size", None), ("compression", None), ("open_timeout", 5),
                 ("close_timeout", 5), ("ping_interval", None)):
        kw.setdefault(k, v)
    return websockets.connect(f"wss://127.0.0.1:{srv.tport}{path}", ssl=ctx,
                              server_hostname="a.test", **kw)


def workers_of(master):
    """{pid: generation} of a master's workers (draining ones included)."""
    out = {}
    for pid in children(master):
        m = WORKER_RE.search(cmdline(pid) or "")
        if m and pid_alive(pid):
            out[pid] = int(m.group(2))
    return out


def holders(master, tport, cport):
    """The worker pids of `master` holding the server side of the connection
    from client port cport (two while it is in flight, else one)."""
    inode = established_inodes(tport).get(cport)
    if not inode:
        return []
    return [pid for pid in workers_of(master) if inode in socket_inodes(pid)]


def owner(master, tport, cport, timeout=10.0, other_than=None):
    """The one worker of `master` holding that connection (not other_than)."""
    def find():
        h = holders(master, tport, cport)
        return h[0] if len(h) == 1 and h[0] != other_than else None
    return wait_until(find, timeout, what=f"one owner of :{cport} under master {master}"
                      + (f" other than {other_than}" if other_than else ""))


def exit_line(srv, pid):
    """The error log's line for worker pid exiting (moved connections counted)."""
    return srv.wait_log(lambda l: f" {pid}: worker #" in l and " exiting (" in l, 10,
                        what=f"worker {pid} exiting")


def new_master(srv):
    return wait_until(lambda: (lambda p: p if p and p != srv.pid else None)(read_pid(srv.pid_file)),
                      15, what="the pid file naming the new master")


# ------------------------------------------------- raw WebSocket over any pipe

def ws_upgrade_request(key, path="/"):
    return ws_request(0, path=path, key=key, host="a.test")


def server_frame(payload, opcode=1):
    """What the echo sends back: one unmasked frame."""
    n = len(payload)
    hdr = bytes([0x80 | opcode, n]) if n < 126 else \
        struct.pack("!BBH", 0x80 | opcode, 126, n) if n < 65536 else \
        struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return hdr + payload


def masked_frame(payload, opcode=1, key=None):
    n = len(payload)
    hdr = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else \
        struct.pack("!BBH", 0x80 | opcode, 0xFE, n) if n < 65536 else \
        struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    key = key if key is not None else os.urandom(4)
    return hdr + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def frame_ending_in_newline(payload, opcode=1):
    """A masked frame whose last byte is '\\n' (its mask chosen so) and with
    no '\\n^' inside: gnutls-cli then takes a '^rekey^' line that follows as
    its command, and nothing of the frame as one."""
    for _ in range(1000):
        key = bytearray(os.urandom(4))
        key[(len(payload) - 1) & 3] = payload[-1] ^ 0x0A
        f = masked_frame(payload, opcode, bytes(key))
        if b"\n^" not in f:
            assert f.endswith(b"\n")
            return f
    raise AssertionError("no mask found")


class Child:
    """A command-line TLS client as a child process: we write its stdin;
    threads collect its stdout (what it received, among its own text) and
    stderr. Stopped by its pid."""

    def __init__(self, argv, env=None):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.out, self.err = bytearray(), bytearray()
        self.cv = threading.Condition()
        self.threads = [threading.Thread(target=self._pump, args=(f, buf), daemon=True)
                        for f, buf in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.threads:
            t.start()
        self.pos = 0                                 # how far stdout has been matched

    def _pump(self, f, buf):
        fd = f.fileno()
        while True:
            try:
                d = os.read(fd, 65536)
            except OSError:
                d = b""
            with self.cv:
                if not d:
                    self.cv.notify_all()
                    return
                buf += d
                self.cv.notify_all()

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                r = pred()
                if r is not None and r is not False:
                    return r
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and
                                 not any(t.is_alive() for t in self.threads)):
                    raise AssertionError(
                        f"{os.path.basename(self.argv[0])}: timed out waiting for {what}; "
                        f"rc={self.p.poll()} stdout tail={bytes(self.out[-600:])!r} "
                        f"stderr tail={bytes(self.err[-1500:])!r}")
                self.cv.wait(min(left, 0.1))

    def expect(self, needle, timeout=10.0):
        """Waits for needle in stdout after what was matched before; returns
        what came between (its own text, if any)."""
        def found():
            i = self.out.find(needle, self.pos)
            return i if i >= 0 else None
        i = self._wait(found, timeout, f"{needle[:60]!r} on stdout")
        between, self.pos = bytes(self.out[self.pos:i]), i + len(needle)
        return between

    def expect_err(self, needle, count, timeout=10.0):
        self._wait(lambda: self.err.count(needle) >= count, timeout,
                   f"{count} x {needle!r} on stderr")

    def close(self, timeout=10.0):
        """EOF on stdin, then the exit status (killed by pid if it lingers)."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise AssertionError(f"{self.argv[0]} did not exit")
        finally:
            for t in self.threads:
                t.join(5)

    def quit(self, line):
        """A last command line (a client may have left already: the server
        closed after the close handshake)."""
        try:
            self.write(line)
        except BrokenPipeError:
            pass

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


def start_ws(child):
    """The WebSocket upgrade through child's TLS connection."""
    key = make_key()
    child.write(ws_upgrade_request(key))
    child.expect(b"HTTP/1.1 101 Switching Protocols\r\n")
    child.expect(f"Sec-WebSocket-Accept: {accept_for(key)}\r\n".encode())
    child.expect(b"\r\n")


# ---------------------------------------------------------------- 1. handoffs

SIZES = (1, 125, 126, 3000, 16383, 16384, 16385, 40000, 70000, 200000, 0, 17)


def message(i):
    """Varied sizes, text (compressible) and binary (random), alternately."""
    n = SIZES[i % len(SIZES)]
    if i % 2:
        return os.urandom(n)
    text = "".join(f"{j}:é;" for j in range(i, i + n))
    return text[:n]


class Pump:
    """Echoes on ws continuously, at most `window` messages in flight,
    checking every echo (in order, type and bytes) against what was sent."""

    def __init__(self, ws, window=2):
        self.ws, self.window = ws, window
        self.stop = threading.Event()
        self.sent = self.echoed = self.bytes = 0
        self.mismatches = []

    async def run(self, limit=10**9):
        inflight, i = [], 0
        while True:
            while len(inflight) < self.window and not self.stop.is_set() and i < limit:
                m = message(i)
                await self.ws.send(m)
                inflight.append(m)
                i += 1
                self.sent += 1
            if not inflight:
                return
            got = await asyncio.wait_for(self.ws.recv(), 15)
            want = inflight.pop(0)
            if got != want:
                self.mismatches.append((self.echoed, len(want), len(got)))
            self.echoed += 1
            self.bytes += len(want)

    def wait_more(self, n=4, timeout=15.0):
        """Blocks until n more echoes came back (from another thread)."""
        base = self.echoed
        wait_until(lambda: self.echoed >= base + n, timeout, interval=0.01,
                   what=f"{n} more echoes")


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_three_reloads_and_a_binary_upgrade_move_a_busy_wss_connection(wss_server, compression):
    """One TCP connection of Python's websockets echoes messages of varied
    sizes (records split at 16 KiB) without pause while the master is sent
    SIGHUP, SIGHUP, SIGUSR2 and (the new master) SIGHUP: after each the
    connection belongs to a worker of the new generation (or master), and
    the one before exits (saying it handed 1 connection over) long before
    shutdown_timeout (30s); not an echo lost, not a byte changed."""
    kw = {"permessage_deflate": {"enabled": "on"}} if compression else {}
    srv = wss_server(workers=2, **kw)
    moves, masters = [], [srv.pid]

    async def scenario():
        async with wss(srv, compression=compression) as ws:
            if compression:
                assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
            tls = ws.transport.get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.3"
            cport = ws.local_address[1]
            pump = Pump(ws)

            def driver():
                try:
                    master = srv.pid
                    cur = owner(master, srv.tport, cport)
                    pump.wait_more(6)
                    for step in ("HUP", "HUP", "USR2", "HUP"):
                        t0 = time.monotonic()
                        before = pump.echoed
                        if step == "USR2":
                            os.kill(master, signal.SIGUSR2)
                            master = new_master(srv)
                            masters.append(master)
                            assert srv.proc.wait(20) == 0
                            gone = time.monotonic() - t0
                            new = owner(master, srv.tport, cport)
                        else:
                            gen = workers_of(master)[cur]
                            os.kill(master, signal.SIGHUP)
                            new = owner(master, srv.tport, cport, other_than=cur)
                            assert workers_of(master)[new] > gen
                            wait_until(lambda: not pid_alive(cur), 20,
                                       what=f"old owner {cur} gone")
                            gone = time.monotonic() - t0
                        assert "(1 connections handed over" in exit_line(srv, cur)
                        pump.wait_more(6)                  # echoes by the new owner
                        moves.append((step, cur, new, round(gone, 2), before, pump.echoed))
                        cur = new
                finally:
                    pump.stop.set()
            await asyncio.gather(pump.run(), asyncio.to_thread(driver))
            assert ws.local_address[1] == cport and not ws.closed
            return pump
    try:
        pump = run_async(scenario(), timeout=120)
    finally:
        if len(masters) > 1 and pid_alive(masters[-1]):
            stop_master(masters[-1])
    assert pump.mismatches == [], pump.mismatches
    assert pump.echoed == pump.sent > 4 * 6 + 6
    assert [m[0] for m in moves] == ["HUP", "HUP", "USR2", "HUP"], moves
    assert len({m[1] for m in moves} | {moves[-1][2]}) == 5, moves     # five owners in turn
    for step, old, new, gone, before, after in moves:
        assert gone < 15, moves                   # not kept until shutdown_timeout (30s)
        assert after > before, moves              # echoes went on meanwhile
    log = srv.log_text()
    assert "1012" not in log and "refused (alert" not in log, log[-3000:]


# ---------------------------------------------------------------- 2. gnutls-cli

@pytest.mark.skipif(GNUTLS_CLI is None, reason="needs gnutls-cli (Debian's gnutls-bin)")
def test_gnutls_cli_key_updates_both_ways_and_across_a_reload(wss_server, tmp_path):
    """GnuTLS (not OpenSSL) speaks TLS 1.3 to us. Its inline commands:
    ^rekey1^ updates its own sending key only (KeyUpdate update_not_requested),
    ^rekey^ updates both (update_requested: we must answer with ours). The
    WebSocket handshake and masked frames go through its stdin; what it
    receives comes out on its stdout as is; its debug log (stderr) shows
    every KeyUpdate sent and received. A reload in the middle moves the
    connection with its keys: KeyUpdates go on after it."""
    srv = wss_server(workers=1)
    g = Child([GNUTLS_CLI, "--insecure", "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3",
               "--inline-commands", f"--logfile={tmp_path / 'gnutls.log'}", "-d", "4",
               "-p", str(srv.tport), "127.0.0.1"])
    try:
        start_ws(g)
        plan = ["^rekey^", "^rekey1^", "^rekey^", "reload", "^rekey1^", "^rekey^", "^rekey^"]
        n = 0

        def echo():
            nonlocal n
            payload = (b"gnutls %d " % n) * (1 + n * 37)
            g.write(frame_ending_in_newline(payload))
            between = g.expect(server_frame(payload))
            assert between == b"", between           # nothing else came before the echo
            n += 1
        echo()
        first = owner(srv.pid, srv.tport, next(iter(client_ports(srv.tport))))
        for step in plan:
            if step == "reload":
                srv.send_signal(signal.SIGHUP)
                cport = next(iter(client_ports(srv.tport)))
                owner(srv.pid, srv.tport, cport, other_than=first)
                wait_until(lambda: not pid_alive(first), 15, what="the old worker gone")
                assert "(1 connections handed over" in exit_line(srv, first)
            else:
                g.write(step.encode() + b"\n")
            echo()
            echo()
        g.write(frame_ending_in_newline(b"\x03\xe8", opcode=8))     # close 1000
        g.expect(server_frame(b"\x03\xe8", opcode=8))
        assert g.close() == 0
    finally:
        g.kill()
    err = g.err.decode(errors="replace")
    want_req, want_own = plan.count("^rekey^"), plan.count("^rekey1^")
    assert err.count("sending key update (1)") == want_req, err[-3000:]
    assert err.count("sending key update (0)") == want_own, err[-3000:]
    # ours: exactly one answer per request, never a request of our own
    assert err.count("received TLS 1.3 key update (0)") == want_req, err[-3000:]
    assert "received TLS 1.3 key update (1)" not in err
    assert (tmp_path / "gnutls.log").read_text().count("Rekey was completed") == len(plan) - 1
    assert "AES-256-GCM" in (tmp_path / "gnutls.log").read_text()


def client_ports(tport):
    return established_inodes(tport).keys()


# ---------------------------------------------------------------- 3. s_client

def msg_events(text):
    """openssl -msg output as a list of (direction, what): direction '>'
    (sent) or '<' (received); what: 'data', 'KU0', 'KU1' (KeyUpdate,
    update_not_requested / update_requested), or another message's name."""
    events, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(>>>|<<<) TLS 1\.[23], (\w+)(?: \[length [0-9a-f]+\])?(?:, (\w+))?", line)
        if not m:
            continue
        d = m.group(1)[0]
        if m.group(2) == "InnerContent" and i + 1 < len(lines) and lines[i + 1].strip() == "17":
            events.append((d, "data"))
        elif m.group(2) == "Handshake" and m.group(3) == "KeyUpdate":
            events.append((d, "KU" + lines[i + 1].split()[-1][-1]))
        elif m.group(2) == "Handshake":
            events.append((d, m.group(3)))
    return events


def sclient(srv, msgfile, *extra):
    return Child([OPENSSL, "s_client", "-connect", f"127.0.0.1:{srv.tport}", "-tls1_3",
                  "-servername", "a.test", "-msg", "-msgfile", str(msgfile), *extra])


def sclient_echo(c, payload):
    c.write(masked_frame(payload))
    c.expect(server_frame(payload))


def sclient_keyupdate(c, cmd, nth):
    """'K' or 'k' alone in one read of s_client's stdin (it looks at the
    first byte of each read); the echo before it was seen, and it says
    KEYUPDATE on stderr once it acted."""
    c.write(cmd + b"\n")
    c.expect_err(b"KEYUPDATE", nth)


def test_openssl_s_client_k_and_K_between_frames(wss_server, tmp_path):
    """s_client's 'k' (its own KeyUpdate) and 'K' (and asks for ours):
    echoes come back after each; its -msg trace shows each 'K' answered by
    exactly one KeyUpdate(update_not_requested) from us, received after
    its request and before the next echo, and no answer to 'k'."""
    srv = wss_server(workers=1)
    msgfile = tmp_path / "msg.txt"
    c = sclient(srv, msgfile)
    plan = [b"K", b"k", b"K", b"K", b"k", b"k", b"K"]
    try:
        start_ws(c)
        sclient_echo(c, b"before any KeyUpdate")
        for i, cmd in enumerate(plan, 1):
            sclient_keyupdate(c, cmd, i)
            sclient_echo(c, b"after %s number %d" % (cmd, i) + b"." * (i * 300))
        c.write(masked_frame(b"\x03\xe8", opcode=8))
        c.expect(server_frame(b"\x03\xe8", opcode=8))
        c.quit(b"Q\n")
        assert c.close() == 0
    finally:
        c.kill()
    sent, received = after_first_keyupdate(msg_events(msgfile.read_text()))
    # each command's KeyUpdate, then the frame after it; for K, our
    # KeyUpdate comes (once) between the echo before it and the one after
    want_sent, want_received = [], []
    for cmd in plan:
        want_sent += ["KU1" if cmd == b"K" else "KU0", "data"]
        want_received += ["KU0", "data"] if cmd == b"K" else ["data"]
    assert sent[:len(want_sent)] == want_sent, sent
    assert received[:len(want_received)] == want_received, received
    assert received.count("KU0") == plan.count(b"K") and "KU1" not in received


def after_first_keyupdate(events):
    """The data records and KeyUpdates sent and received from the client's
    first KeyUpdate on (everything before it was answered already)."""
    events = [e for e in events if e[1] in ("data", "KU0", "KU1")]
    i = next(k for k, e in enumerate(events) if e[0] == ">" and e[1].startswith("KU"))
    return [w for d, w in events[i:] if d == ">"], [w for d, w in events[i:] if d == "<"]


# ---------------------------------------------------------------- 4. Node

@pytest.mark.skipif(NODE is None or not os.path.isdir("/usr/share/nodejs/ws"),
                    reason="needs node and Debian's node-ws")
def test_node_ws_over_wss_up_to_one_mebibyte(wss_server, tmp_path):
    srv = wss_server(workers=2)
    script = tmp_path / "client.js"
    script.write_text(r"""
const WebSocket = require('ws');
const crypto = require('crypto');
const sizes = [0, 1, 125, 126, 16383, 16384, 16385, 65535, 65536, 100000, 524288, 1048576];
const msgs = [];
for (const n of sizes) {
  msgs.push(crypto.randomBytes(n));                            // binary
  msgs.push('ü'.repeat(Math.floor(n / 2)) + 'x'.repeat(n % 2)); // text, n bytes of UTF-8
}
const ws = new WebSocket(process.argv[2], {rejectUnauthorized: false});
let i = 0, bytes = 0;
ws.on('open', () => {
  console.log('tls=' + ws._socket.getProtocol());
  ws.send(msgs[0]);
});
ws.on('message', (data, isBinary) => {
  const want = msgs[i];
  const ok = Buffer.isBuffer(want) ? isBinary && Buffer.compare(data, want) === 0
                                   : !isBinary && data.toString() === want;
  if (!ok) { console.log('mismatch ' + i); process.exit(1); }
  bytes += data.length;
  if (++i === msgs.length) { console.log('ok ' + i + ' ' + bytes); ws.close(1000); }
  else ws.send(msgs[i]);
});
ws.on('close', (code) => { console.log('close ' + code); process.exit(i === msgs.length ? 0 : 1); });
ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
""")
    r = subprocess.run([NODE, str(script), f"wss://127.0.0.1:{srv.tport}/echo"],
                       capture_output=True, text=True, timeout=40,
                       env={"NODE_PATH": "/usr/share/nodejs", "PATH": os.environ["PATH"]})
    total = 2 * sum([0, 1, 125, 126, 16383, 16384, 16385, 65535, 65536, 100000, 524288, 1048576])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "tls=TLSv1.3" in r.stdout and f"ok 24 {total}" in r.stdout, r.stdout
    assert "close 1000" in r.stdout


# ---------------------------------------------------------------- 5. Chromium

class Control:
    """A WebSocket server of the test's own (loopback) that tells a page
    when to stop: it gets 'open' from the page, and sends 'stop' when
    told."""

    def __init__(self):
        self.port = pick_free_port()
        self.opened, self.stop, self.done = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self):
        loop = asyncio.get_running_loop()

        async def handler(ws, *_):
            if await ws.recv() == "open":
                self.opened.set()
            await loop.run_in_executor(None, self.stop.wait, 60)
            await ws.send("stop")
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            except asyncio.TimeoutError:
                pass
        async with websockets.serve(handler, "127.0.0.1", self.port):
            await loop.run_in_executor(None, self.done.wait, 90)

    def close(self):
        self.stop.set()
        self.done.set()
        self.thread.join(15)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_chromium_over_wss_across_a_reload_and_a_binary_upgrade(wss_server, tmp_path):
    """A page in headless Chromium echoes over wss:// without pause (send,
    wait for the echo, check it, send the next) while the test reloads and
    upgrades the server; then the page is told to stop (through a control
    WebSocket of the test's own) and reports its verdict as the query of a
    second wss connection, read from the access log. The main connection's
    own access-log line, written by the new master's worker, counts its two
    handoffs; the old worker and the old master exit long before
    shutdown_timeout (30s)."""
    srv = wss_server(workers=1, access_log=True)
    ctl = Control()
    page = tmp_path / "page.html"
    page.write_text("""<!DOCTYPE html><html><body><script>
const url = 'wss://127.0.0.1:%d/echo';
const sizes = [1, 125, 126, 1000, 16384, 16385, 70000, 5];
let n = 0, bad = 0, stop = false, done = false;
const ctl = new WebSocket('ws://127.0.0.1:%d/');
ctl.onmessage = () => { stop = true; };
const ws = new WebSocket(url + '?main');
ws.binaryType = 'arraybuffer';
const report = (v) => {
  if (done) return;
  done = true;
  const r = new WebSocket(url + '?result=' + encodeURIComponent(v));
  r.onopen = () => { r.close(1000); ws.close(1000); };
};
const msg = (i) => {
  const len = sizes[i %% sizes.length];
  let s = '';
  while (s.length < len) s += i + ',' + s.length + ';';
  return s.slice(0, len);
};
const next = () => ws.send(msg(n));
ws.onopen = () => { ctl.send('open'); next(); };
ws.onmessage = (e) => {
  if (e.data !== msg(n)) bad++;
  n++;
  if (stop) report('n=' + n + ' bad=' + bad); else next();
};
ws.onclose = (e) => report('closed ' + e.code + ' n=' + n + ' bad=' + bad);
ws.onerror = () => report('error n=' + n);
</script></body></html>""" % (srv.tport, ctl.port))
    log = tmp_path / "access.log"

    def access():
        return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []

    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                "--ignore-certificate-errors", "--no-first-run",
                                f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    new = None
    try:
        assert ctl.opened.wait(30), "the page's wss connection did not open"
        cport = wait_until(lambda: next(iter(client_ports(srv.tport)), None), 5,
                           what="the page's connection")
        first = owner(srv.pid, srv.tport, cport)
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGHUP)
        second = owner(srv.pid, srv.tport, cport, other_than=first)
        wait_until(lambda: not pid_alive(first), 15, what="the first worker gone")
        reload_took = time.monotonic() - t0
        assert "(1 connections handed over" in exit_line(srv, first)
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGUSR2)
        new = new_master(srv)
        assert srv.wait_exit(20) == 0
        upgrade_took = time.monotonic() - t0
        assert not pid_alive(second)
        owner(new, srv.tport, cport)
        time.sleep(0.3)
        ctl.stop.set()
        line = wait_until(lambda: next((l for l in access() if "result=" in l["path"]), None),
                          20, what="the page's verdict")
        main = wait_until(lambda: next((l for l in access() if l["path"].endswith("?main")), None),
                          10, what="the main connection's line")
        new_workers = set(workers_of(new))
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)
        ctl.close()
        if new and pid_alive(new):
            stop_master(new)
    verdict = urllib.parse.unquote(line["path"].split("result=", 1)[1])
    m = re.fullmatch(r"n=(\d+) bad=(\d+)", verdict)
    assert m, verdict
    assert int(m.group(2)) == 0 and int(m.group(1)) >= 20, verdict
    assert main["handoffs"] == 2, main
    assert main["messages_in"] == main["messages_out"] == int(m.group(1)), (main, verdict)
    assert main["pid"] in new_workers, (main, new_workers)
    assert reload_took < 15 and upgrade_took < 15, (reload_took, upgrade_took)


# ---------------------------------------------------------------- MemoryBIO client

class MemTLS:
    """A TLS 1.3 client over ssl.MemoryBIO: every byte it sends is ours to
    see (and spoil) first. one_byte: each byte its own send() with
    TCP_NODELAY, with a short pause every `pause_every` bytes."""

    def __init__(self, port, one_byte=False, pause_every=512):
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.one_byte, self.pause_every = one_byte, pause_every
        self.sends = self.bytes_sent = 0
        ctx = client_ctx()
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outg, server_hostname="a.test")
        self.plain = b""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self._feed(deadline)
        self.flush()
        assert self.obj.version() == "TLSv1.3"

    def _send(self, data):
        if not self.one_byte:
            self.sock.sendall(data)
            self.sends += 1
        else:
            for i in range(len(data)):
                assert self.sock.send(data[i:i + 1]) == 1
                self.sends += 1
                if self.sends % self.pause_every == 0:
                    time.sleep(0.001)
        self.bytes_sent += len(data)

    def flush(self, spoil=None):
        data = self.outg.read()
        if data:
            self._send(spoil(data) if spoil else data)

    def _feed(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out reading from the server")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.inc.write(chunk)

    def write(self, data, spoil=None):
        self.obj.write(data)
        self.flush(spoil)

    def read(self, n, timeout=10.0):
        """Exactly n bytes of plaintext."""
        deadline = time.monotonic() + timeout
        while len(self.plain) < n:
            try:
                self.plain += self.obj.read(1 << 17)
            except ssl.SSLWantReadError:
                self.flush()
                self._feed(deadline)
        out, self.plain = self.plain[:n], self.plain[n:]
        return out

    def read_until(self, marker, timeout=10.0):
        deadline = time.monotonic() + timeout
        while marker not in self.plain:
            try:
                self.plain += self.obj.read(1 << 17)
            except ssl.SSLWantReadError:
                self.flush()
                self._feed(deadline)
        i = self.plain.index(marker) + len(marker)
        out, self.plain = self.plain[:i], self.plain[i:]
        return out

    def upgrade(self):
        key = make_key()
        self.write(ws_upgrade_request(key))
        head = self.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ") and \
            f"Sec-WebSocket-Accept: {accept_for(key)}\r\n".encode() in head, head

    def recv_frame(self, timeout=10.0):
        b0, b1 = self.read(2, timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read(2, timeout))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read(8, timeout))[0]
        assert not b1 & 0x80
        return b0, self.read(n, timeout)

    def echo(self, payload, opcode=2, timeout=10.0):
        self.write(masked_frame(payload, opcode))
        parts, first = [], None
        while True:
            b0, p = self.recv_frame(timeout)
            first = first if first is not None else b0 & 0x0F
            parts.append(p)
            if b0 & 0x80:
                assert first == opcode, (first, opcode)
                return b"".join(parts)

    def close(self):
        self.sock.close()


def spoil_at(pos):
    """Flips one bit of the first record's ciphertext: at `pos` bytes after
    its header (negative: from the record's end, i.e. in its tag)."""
    def spoil(data):
        assert data[0] == 23 and data[1:3] == b"\x03\x03", data[:5]
        n = struct.unpack("!H", data[3:5])[0]
        i = 5 + (pos if pos >= 0 else n + pos)
        assert 5 <= i < 5 + n
        return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]
    return spoil


class SyncWss:
    """A plain blocking wss client (Python's ssl on a socket)."""

    def __init__(self, port):
        self.t = client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", port), 5),
                                          server_hostname="a.test")
        self.t.settimeout(10)
        key = make_key()
        self.t.sendall(ws_upgrade_request(key))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.t.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ") and accept_for(key).encode() in head

    def echo(self, payload):
        self.t.sendall(masked_frame(payload, 2))
        want = server_frame(payload, 2)
        while len(self.buf) < len(want):
            d = self.t.recv(1 << 16)
            assert d, "closed"
            self.buf += d
        got, self.buf = self.buf[:len(want)], self.buf[len(want):]
        return got == want

    def close(self):
        self.t.close()


# ---------------------------------------------------------------- 6. tampering

@pytest.mark.parametrize("pos", [0, 7, -1], ids=["first-byte", "inside", "tag"])
def test_a_tampered_record_gets_bad_record_mac_and_others_go_on(wss_server, pos):
    """One bit flipped in a client's application-data record (after the
    handshake and the upgrade, with our records): it gets our encrypted
    bad_record_mac alert (Python's OpenSSL reports the alert it received,
    not a failure of its own), then the end of the connection; the error
    log names the refused record; a wss connection open beside it, on the
    same worker, keeps echoing."""
    srv = wss_server(workers=1)
    other = SyncWss(srv.tport)
    assert other.echo(b"before")
    c = MemTLS(srv.tport)
    c.upgrade()
    assert c.echo(b"a good one") == b"a good one"
    c.write(masked_frame(b"this frame's record is spoilt", 2), spoil=spoil_at(pos))
    with pytest.raises(ssl.SSLError) as e:
        c.read(1)
    assert e.value.reason == "SSLV3_ALERT_BAD_RECORD_MAC", e.value
    with pytest.raises((EOFError, ConnectionError)):
        for _ in range(100):
            c._feed(time.monotonic() + 5)              # anything after the alert, then the end
    c.close()
    srv.wait_log(lambda l: "TLS record from 127.0.0.1:" in l and "refused (alert 20)" in l,
                 what="the refused record logged")
    for i in range(20):
        assert other.echo(b"still here %d" % i + os.urandom(i * 1000))
    other.close()


# ---------------------------------------------------------------- 7. 1-byte segments

def test_one_byte_tcp_segments_from_the_client_hello_on_and_across_a_reload(wss_server):
    """Every byte the client sends (its handshake records, the upgrade, the
    frames, a 100 KiB message) is one send() with TCP_NODELAY; a reload
    comes while a record is half sent, so the old worker holds part of a
    record: the connection moves once it is whole, and every echo is
    exact."""
    srv = wss_server(workers=1)
    c = MemTLS(srv.tport, one_byte=True)
    c.upgrade()
    for p in (b"x", b"y" * 125, bytes(range(256)) * 4):
        assert c.echo(p) == p
    first = owner(srv.pid, srv.tport, c.sock.getsockname()[1])
    big = os.urandom(100 * 1024)
    frame = masked_frame(big, 2)
    c.obj.write(frame)
    records = c.outg.read()
    half = len(records) // 2 + 3                      # inside a record, not at a boundary
    c._send(records[:half])
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready", what="generation 2 ready")
    time.sleep(0.2)
    assert pid_alive(first)                           # it cannot go with part of a record
    c._send(records[half:])
    got = []
    while sum(map(len, got)) < len(big):
        b0, p = c.recv_frame(20)
        got.append(p)
    assert b"".join(got) == big
    cport = c.sock.getsockname()[1]
    owner(srv.pid, srv.tport, cport, other_than=first)
    wait_until(lambda: not pid_alive(first), 15, what="the old worker gone")
    assert "(1 connections handed over" in exit_line(srv, first)
    for p in (b"after", os.urandom(20000)):
        assert c.echo(p) == p
    assert c.sends == c.bytes_sent > 100 * 1024
    c.close()


# ---------------------------------------------------------------- 8. KeyUpdate under load

def test_key_updates_while_other_connections_echo(wss_server, tmp_path):
    """Four websockets clients echo continuously, on both workers, while an
    s_client on the same server asks for a KeyUpdate between each of its
    frames (each answered once, echoes right after): nothing of one
    connection's keys reaches another's records."""
    srv = wss_server(workers=2)
    msgfile = tmp_path / "msg.txt"
    rounds = 25
    result = {}

    async def scenario():
        conns = [await wss(srv) for _ in range(4)]
        pumps = [Pump(ws, window=3) for ws in conns]

        def rekeyer():
            c = sclient(srv, msgfile)
            try:
                start_ws(c)
                sclient_echo(c, b"first")
                for i in range(1, rounds + 1):
                    pumps[0].wait_more(1)
                    sclient_keyupdate(c, b"K", i)
                    sclient_echo(c, os.urandom(4).hex().encode() + b"!" * (i * 97 % 3000))  # text: valid UTF-8
                c.write(masked_frame(b"\x03\xe8", opcode=8))
                c.expect(server_frame(b"\x03\xe8", opcode=8))
                c.quit(b"Q\n")
                result["rc"] = c.close()
            finally:
                c.kill()
                for p in pumps:
                    p.stop.set()
        await asyncio.gather(asyncio.to_thread(rekeyer), *(p.run() for p in pumps))
        for ws in conns:
            await ws.close()
        return pumps
    pumps = run_async(scenario(), timeout=90)
    assert result.get("rc") == 0
    for p in pumps:
        assert p.mismatches == [] and p.echoed == p.sent >= 10, (p.echoed, p.mismatches)
    sent, received = after_first_keyupdate(msg_events(msgfile.read_text()))
    assert sent[:2 * rounds] == ["KU1", "data"] * rounds, sent
    assert received[:2 * rounds] == ["KU0", "data"] * rounds, received
    log = srv.log_text()
    assert "refused (alert" not in log and "[error]" not in log, log[-3000:]


# ---------------------------------------------------------------- 9. OpenSSL's records

def test_records_openssl_is_shown_and_such_connections_stay_with_their_worker(wss_server, san_dir):
    """records: openssl keeps OpenSSL's record layer for the whole
    connection: on reload it is not handed over; the old worker (draining)
    goes on serving it, and exits once it closes."""
    srv = wss_server(workers=1, records="openssl")
    r = run_cli(["-T", "-c", srv.config_path], san_dir)
    assert r.returncode == 0 and "      records: openssl\n" in r.stdout, r.stdout
    stays_with_its_worker(srv, None)


def test_tls12_connections_stay_with_their_worker_while_tls13_ones_move(wss_server, san_dir):
    """With records: wsechod (the default, as -T shows), a TLS 1.2
    connection keeps OpenSSL's records (ours are TLS 1.3's): on reload it
    stays with its worker and still echoes; a TLS 1.3 one beside it moves."""
    srv = wss_server(workers=1)
    r = run_cli(["-T", "-c", srv.config_path], san_dir)
    assert r.returncode == 0 and "      records: wsechod\n" in r.stdout, r.stdout
    stays_with_its_worker(srv, ssl.TLSVersion.TLSv1_2)


def stays_with_its_worker(srv, version):
    async def scenario():
        async with wss(srv, version=version) as kept, wss(srv) as moved:
            tls = kept.transport.get_extra_info("ssl_object")
            assert tls.version() == ("TLSv1.2" if version else "TLSv1.3")
            kport, mport = kept.local_address[1], moved.local_address[1]
            for ws in (kept, moved):
                await ws.send("before")
                assert await ws.recv() == "before"
            first = await asyncio.to_thread(owner, srv.pid, srv.tport, kport)
            srv.send_signal(signal.SIGHUP)
            await asyncio.to_thread(srv.wait_log, "generation 2 ready")
            if version is None:
                moved_to = None                       # both are records: openssl
            else:
                moved_to = await asyncio.to_thread(owner, srv.pid, srv.tport, mport, 10, first)
            for i in range(5):
                await asyncio.sleep(0.3)
                assert holders(srv.pid, srv.tport, kport) == [first]
                assert workers_of(srv.pid)[first] == 1     # still the old generation's
                for ws in (kept, moved):
                    m = os.urandom(20000 * i)
                    await ws.send(m)
                    assert await ws.recv() == m
            if moved_to is not None:
                assert workers_of(srv.pid)[moved_to] == 2
            await kept.close()
            if version is None:
                await moved.close()
            t0 = time.monotonic()
            await asyncio.to_thread(wait_until, lambda: not pid_alive(first), 10)
            return first, time.monotonic() - t0
    first, took = run_async(scenario(), timeout=60)
    line = exit_line(srv, first)
    assert "(0 connections handed over" in line if version is None else \
        "(1 connections handed over" in line, line
    assert took < 5


# ---------------------------------------------------------------- 10. counters

def test_wss_bytes_are_counted_in_metrics_and_the_access_log(wss_server):
    """wsechod_wire_bytes_total counts the TLS bytes read and written by
    our records (before and after a handoff, when nothing but tlsown can
    read that connection); the access log's line for it has the exact
    payload bytes and wire bytes above them by at least a record's
    overhead each."""
    srv = wss_server(workers=1, status=True, access_log=True)
    wait_until(lambda: val(scrape(srv.sport), "wsechod_connection_duration_seconds_count") >= 1,
               10, what="the start-up probe counted")
    msgs = [os.urandom(n) for n in (10, 1000, 16384, 16385, 50000)]
    payload = sum(map(len, msgs))

    def d(a, b, name, **labels):
        return val(b, name, **labels) - val(a, name, **labels)

    async def scenario():
        async with wss(srv, "/echo?counted") as ws:
            m0 = scrape(srv.sport)
            for m in msgs:
                await ws.send(m)
                assert await ws.recv() == m
            m1 = scrape(srv.sport)
            first = await asyncio.to_thread(owner, srv.pid, srv.tport, ws.local_address[1])
            srv.send_signal(signal.SIGHUP)
            await asyncio.to_thread(owner, srv.pid, srv.tport, ws.local_address[1], 10, first)
            m2 = scrape(srv.sport)
            for m in msgs:
                await ws.send(m)
                assert await ws.recv() == m
            await asyncio.to_thread(wait_until, lambda: not pid_alive(first), 10)
            m3 = scrape(srv.sport)
            return m0, m1, m2, m3
    m0, m1, m2, m3 = run_async(scenario(), timeout=40)
    # per message: a frame header (client: masked) and per record 22 bytes
    least_in = payload + len(msgs) * (2 + 4) + len(msgs) * 22
    least_out = payload + len(msgs) * 2 + len(msgs) * 22
    for a, b in ((m0, m1), (m2, m3)):
        assert d(a, b, "wsechod_payload_bytes_total", direction="in") == payload
        assert d(a, b, "wsechod_payload_bytes_total", direction="out") == payload
        assert least_in <= d(a, b, "wsechod_wire_bytes_total", direction="in") < least_in + 2000
        assert least_out <= d(a, b, "wsechod_wire_bytes_total", direction="out") < \
            least_out + 2000
    assert d(m1, m2, "wsechod_handoffs_total", result="received") == 1
    log = srv.tmp / "access.log"
    line = wait_until(lambda: next((json.loads(l) for l in (log.read_text().splitlines()
                                                            if log.exists() else [])
                                    if "?counted" in l), None), 10, what="the access log line")
    assert line["bytes_in"] == line["bytes_out"] == 2 * payload, line
    assert line["handoffs"] == 1 and line["messages_in"] == 2 * len(msgs), line
    assert line["wire_bytes_in"] >= 2 * least_in and line["wire_bytes_out"] >= 2 * least_out, line
