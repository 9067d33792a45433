"""permessage-deflate (RFC 7692): negotiation over raw handshakes, every
RSV1 rule and the decompression bomb over raw frames (compressed here with
Python's zlib, an independent implementation), Python `websockets` and
Node `ws` with compression, a compressed connection handed over on reload."""

import json
import shutil
import signal
import subprocess
import zlib

import pytest

from conftest import (RawWS, pick_free_port, run_async, run_cli, wait_until, ws_connect,
                      ws_request)
from test_handoff import read_pid, stop_master
from test_status import scrape, val

PMD = {"enabled": "on"}
BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def compress(data, level=1):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data):
    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")


TAKE = {"enabled": "on", "server_no_context_takeover": "off",
        "client_no_context_takeover": "off"}


class Stream:
    """One direction's compressor and decompressor with context kept, as a
    peer that takes over context runs them (Python's zlib: not ours)."""

    def __init__(self, level=1, bits=15):
        self.c = zlib.compressobj(level, zlib.DEFLATED, -bits)
        self.d = zlib.decompressobj(-15)

    def compress(self, data):
        out = self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]

    def inflate(self, data):
        return self.d.decompress(data + b"\x00\x00\xff\xff")


class DeflateWS(RawWS):
    """A raw client that offers permessage-deflate and reads RSV1 frames."""

    rsv_allowed = 0x40

    def __init__(self, port, offer="permessage-deflate", path="/", lines=None):
        self.offer = offer
        extra = [("Sec-WebSocket-Extensions", v) for v in (lines or [offer])]
        self.key_req = ws_request(port, path=path, extra=extra)
        super().__init__(port, path=path, request=self.key_req)

    def echo_z(self, data, opcode=2):
        """Sends data compressed; returns (rsv1, inflated reply)."""
        self.send_frame(opcode, compress(data), rsv=4)
        fin, op, payload = self.recv_frame()
        assert fin and op == opcode
        return self.last_rsv1, inflate(payload) if self.last_rsv1 else payload


def answer(port, *lines):
    """Our Sec-WebSocket-Extensions for these request header lines (None: none)."""
    extra = [("Sec-WebSocket-Extensions", v) for v in lines]
    ws = RawWS(port, request=ws_request(port, extra=extra))
    got = ws.response.header("sec-websocket-extensions")
    ws.abort()
    return got


# ---------------------------------------------------------------- negotiation

@pytest.mark.parametrize("offers,want", [
    (["permessage-deflate"], BASE),
    (["permessage-deflate; client_max_window_bits"], BASE),
    (["permessage-deflate; server_max_window_bits=10"], BASE + "; server_max_window_bits=10"),
    (['permessage-deflate; server_max_window_bits="12"'], BASE + "; server_max_window_bits=12"),
    (["permessage-deflate; client_no_context_takeover; server_no_context_takeover"], BASE),
    # declined offers: the next one is taken
    (["permessage-deflate; server_max_window_bits=8, permessage-deflate"], BASE),
    (["permessage-deflate; foo, permessage-deflate; client_max_window_bits=15"], BASE),
    (["permessage-deflate; server_no_context_takeover; server_no_context_takeover, "
      "permessage-deflate; server_max_window_bits=9"], BASE + "; server_max_window_bits=9"),
    (["x-webkit-deflate-frame; no_context_takeover, permessage-deflate"], BASE),
    (["foo", "permessage-deflate"], BASE),                 # over two header lines
    # nothing acceptable: no extension, the handshake still succeeds
    (["permessage-deflate; client_max_window_bits=16"], None),
    (["permessage-deflate; server_max_window_bits=010"], None),
    (["permessage-deflate; server_max_window_bits"], None),
    (["permessage-deflate; server_no_context_takeover=1"], None),
    (["permessage-deflate; server_max_window_bits=8"], None),
    (["x-webkit-deflate-frame"], None),
])
def test_negotiation(server_factory, offers, want):
    srv = server_factory(workers=1, permessage_deflate=PMD)
    assert answer(srv.port, *offers) == want


def test_client_window_asked_only_when_offered(server_factory):
    srv = server_factory(workers=1, permessage_deflate={"enabled": "on",
                                                        "client_max_window_bits": 10})
    assert answer(srv.port, "permessage-deflate; client_max_window_bits") == \
        BASE + "; client_max_window_bits=10"
    assert answer(srv.port, "permessage-deflate; client_max_window_bits=9") == BASE
    assert answer(srv.port, "permessage-deflate") == BASE


def test_off_by_default_and_rsv1_refused_then(server):
    assert answer(server.port, "permessage-deflate") is None
    ws = RawWS(server.port)
    ws.send_frame(1, compress(b"hello"), rsv=4)
    assert ws.recv_close()[0] == 1002


@pytest.mark.parametrize("offers,want", [
    (["permessage-deflate"], "permessage-deflate"),
    (["permessage-deflate; client_max_window_bits"], "permessage-deflate"),
    # its own hint becomes our binding answer: we keep only that much of its stream
    (["permessage-deflate; client_max_window_bits=10"],
     "permessage-deflate; client_max_window_bits=10"),
    (["permessage-deflate; server_no_context_takeover"],
     "permessage-deflate; server_no_context_takeover"),
    (["permessage-deflate; client_no_context_takeover"],
     "permessage-deflate; client_no_context_takeover"),
    (["permessage-deflate; server_max_window_bits=11"],
     "permessage-deflate; server_max_window_bits=11"),
])
def test_negotiation_with_context_takeover(server_factory, offers, want):
    srv = server_factory(workers=1, permessage_deflate=TAKE)
    assert answer(srv.port, *offers) == want


def test_context_takeover_one_way_by_config(server_factory):
    srv = server_factory(workers=1, permessage_deflate={"enabled": "on",
                                                        "server_no_context_takeover": "off"})
    assert answer(srv.port, "permessage-deflate") == \
        "permessage-deflate; client_no_context_takeover"


def test_bad_server_history_is_a_config_error(tmp_path, san_dir):
    p = tmp_path / "c.yaml"
    p.write_text("listen: [127.0.0.1:1]\npermessage_deflate:\n  enabled: on\n"
                 "  server_history: 100\n")
    r = run_cli(["-t", "-c", p], san_dir)
    assert r.returncode != 0 and f"{p}:4:19: server_history: 100 is out of range" in r.stderr, \
        r.stderr


# ---------------------------------------------------------------- frames

def test_compressed_echo_and_min_size(server_factory):
    srv = server_factory(workers=1, permessage_deflate={"enabled": "on", "min_size": 100})
    ws = DeflateWS(srv.port)
    big = json.dumps([{"id": i, "name": "item %d" % i, "tags": ["a", "b"]} for i in range(300)])
    rsv1, got = ws.echo_z(big.encode(), opcode=1)
    assert rsv1 and got == big.encode()
    rsv1, got = ws.echo_z(b"tiny", opcode=2)       # under min_size: sent plain
    assert not rsv1 and got == b"tiny"
    ws.send_frame(2, b"plain" * 50)                 # uncompressed from the client is fine
    fin, op, payload = ws.recv_frame()
    assert ws.last_rsv1 and inflate(payload) == b"plain" * 50
    ws.close()


def test_fragmented_compressed_message_with_a_ping_inside(server_factory):
    srv = server_factory(workers=1, permessage_deflate=PMD)
    ws = DeflateWS(srv.port)
    body = ("fragmented and compressed " * 400).encode()
    z = compress(body)
    ws.send_frame(1, z[:10], fin=False, rsv=4)
    ws.send_frame(9, b"ping!")
    ws.send_frame(0, z[10:200], fin=False)
    ws.send_frame(0, z[200:], fin=True)
    fin, op, payload = ws.recv_frame()
    assert (op, payload) == (10, b"ping!")
    fin, op, payload = ws.recv_frame()
    assert op == 1 and inflate(payload) == body
    ws.close()


@pytest.mark.parametrize("frames,code", [
    ([(1, b"", False, 4), (0, b"x", True, 4)], 1002),          # RSV1 on a continuation
    ([(9, b"p", True, 4)], 1002),                              # RSV1 on a ping
    ([(2, b"\xff\xff\xff\xff garbage", True, 4)], 1007),       # not deflate data
    ([(1, None, True, 4)], 1007),                              # invalid UTF-8, compressed
    ([(2, b"x", True, 2)], 1002),                              # RSV2: never ours
])
def test_bad_compressed_frames(server_factory, frames, code):
    srv = server_factory(workers=1, permessage_deflate=PMD)
    ws = DeflateWS(srv.port)
    for op, payload, fin, rsv in frames:
        ws.send_frame(op, compress(b"ok \xc3\x28 bad") if payload is None else payload,
                      fin=fin, rsv=rsv)
    assert ws.recv_close()[0] == code
    other = DeflateWS(srv.port)                 # and nothing else is touched
    assert other.echo_z(b"still fine" * 20)[1] == b"still fine" * 20
    other.close()


def test_decompression_bomb_stops_at_max_message_size(server_factory):
    srv = server_factory(workers=1, permessage_deflate=PMD, max_message_size="1m")
    bomb = compress(b"\0" * (64 << 20), 9)         # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 70_000
    ws = DeflateWS(srv.port)
    ws.send_frame(2, bomb, rsv=4)
    assert ws.recv_close(timeout=10)[0] == 1009
    near = compress(b"\1" * (1 << 20))             # exactly the limit: fine
    ok = DeflateWS(srv.port)
    ok.send_frame(2, near, rsv=4)
    fin, op, payload = ok.recv_frame(timeout=10)
    assert inflate(payload) == b"\1" * (1 << 20)
    ok.close()


def context_exchange(ws, up, down, msgs):
    """Sends msgs compressed with context kept; returns the reply sizes on
    the wire, checking every reply inflates (with context) to the message."""
    sizes = []
    for m in msgs:
        ws.send_frame(2, up.compress(m), rsv=4)
        fin, op, payload = ws.recv_frame()
        assert fin and op == 2 and ws.last_rsv1
        assert down.inflate(payload) == m
        sizes.append(len(payload))
    return sizes


def record(i):
    return json.dumps({"id": i, "user": "user-%d" % (i * 7919 % 1000), "status": "active",
                       "items": [{"sku": "sku-%d" % (i * j % 97), "qty": j} for j in range(8)]}
                      ).encode()


def test_context_takeover_both_ways(server_factory):
    """Python's zlib keeps its context across messages (refers back into
    earlier ones); so do we: our replies refer back too, and shrink."""
    srv = server_factory(workers=1, permessage_deflate=TAKE)
    ws = DeflateWS(srv.port)
    assert ws.response.header("sec-websocket-extensions") == "permessage-deflate"
    up, down = Stream(), Stream()
    msgs = [record(i) for i in range(40)] + [record(3)] * 5
    sizes = context_exchange(ws, up, down, msgs)
    alone = len(compress(record(3)))
    assert sizes[-1] < alone / 2, (sizes[-1], alone)     # the reply referred back
    # an uncompressed message and a fragmented one with a ping inside do not
    # disturb either context
    ws.send_frame(2, b"plain, not in the stream")
    assert ws.recv_frame()[2] == b"plain, not in the stream" and not ws.last_rsv1
    z = up.compress(record(5) * 3)
    ws.send_frame(2, z[:5], fin=False, rsv=4)
    ws.send_frame(9, b"p")
    ws.send_frame(0, z[5:], fin=True)
    assert ws.recv_frame()[1:] == (10, b"p")
    fin, op, payload = ws.recv_frame()
    assert down.inflate(payload) == record(5) * 3
    assert context_exchange(ws, up, down, [record(7)])[0] < alone / 2
    ws.close()


def test_context_takeover_bad_data_and_bomb(server_factory):
    srv = server_factory(workers=1, permessage_deflate=TAKE, max_message_size="1m")
    ws = DeflateWS(srv.port)
    up, down = Stream(), Stream()
    context_exchange(ws, up, down, [record(1)])
    ws.send_frame(2, compress(b"\0" * (8 << 20), 9), rsv=4)
    assert ws.recv_close(timeout=10)[0] == 1009
    ws = DeflateWS(srv.port)
    # a reference 30 KiB back into a window it never filled: invalid here
    ws.send_frame(2, Stream().compress(b"x") + b"\x00", rsv=4)
    ws.send_frame(2, bytes([0x05, 0xe0, 0xff, 0x0f]) * 4, rsv=4)
    assert ws.recv_close()[0] == 1007


def test_context_takeover_survives_reload_and_binary_upgrade(server_factory):
    """The windows travel with the connection: after each handoff the same
    streams go on, both ways, referring back to before it."""
    srv = server_factory(workers=1, permessage_deflate=TAKE, reload_handoff="on")
    ws = DeflateWS(srv.port)
    up, down = Stream(), Stream()
    context_exchange(ws, up, down, [record(i) for i in range(10)])
    alone = len(compress(record(4)))
    old = set(srv.workers())
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: not (set(srv.workers()) & old) and srv.workers(), 10, what="new worker")
    assert context_exchange(ws, up, down, [record(4)])[0] < alone / 2
    srv.send_signal(signal.SIGUSR2)
    new = wait_until(lambda: (lambda p: p if p and p != srv.pid else None)(
        read_pid(srv.pid_file)), 15, what="the new master")
    try:
        assert srv.wait_exit(15) == 0
        assert context_exchange(ws, up, down, [record(6), record(4)])[1] < alone / 2
        ws.close()
    finally:
        stop_master(new)


# ---------------------------------------------------------------- real clients

@pytest.mark.parametrize("pmd,ext", [(PMD, BASE), (TAKE, "permessage-deflate")])
def test_python_websockets_with_compression(server_factory, pmd, ext):
    srv = server_factory(workers=1, permessage_deflate=pmd)

    async def run():
        async with ws_connect(srv.port, compression="deflate") as ws:
            assert ws.response_headers["Sec-WebSocket-Extensions"] == ext
            for m in ("short", "é" * 50_000, b"\x00\x01" * 40_000, json.dumps(list(range(5000))),
                      "short", json.dumps(list(range(5000)))):
                await ws.send(m)
                assert await ws.recv() == m
    run_async(run())


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="needs node and Debian's node-ws")
@pytest.mark.parametrize("pmd", [PMD, TAKE], ids=["no-context", "context-takeover"])
def test_node_ws_with_per_message_deflate(server_factory, tmp_path, pmd):
    srv = server_factory(workers=1, permessage_deflate=pmd)
    script = tmp_path / "client.js"
    script.write_text("""
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[2], {perMessageDeflate: {threshold: 0}});
const msgs = ['x'.repeat(100), JSON.stringify(Array.from({length: 3000}, (_, i) => ({i}))),
              Buffer.alloc(70000, 7), 'x'.repeat(100),
              JSON.stringify(Array.from({length: 3000}, (_, i) => ({i})))];
let i = 0;
ws.on('open', () => { console.log('ext=' + ws.extensions); ws.send(msgs[0]); });
ws.on('message', (data, isBinary) => {
  const want = msgs[i];
  const ok = isBinary ? Buffer.compare(data, want) === 0 : data.toString() === want;
  if (!ok) { console.log('mismatch ' + i); process.exit(1); }
  if (++i === msgs.length) { console.log('ok'); ws.close(); } else ws.send(msgs[i]);
});
ws.on('close', () => process.exit(i === msgs.length ? 0 : 1));
ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
""")
    r = subprocess.run([NODE, str(script), f"ws://127.0.0.1:{srv.port}/"], capture_output=True,
                       text=True, timeout=30, env={"NODE_PATH": "/usr/share/nodejs"})
    assert r.returncode == 0 and "ok" in r.stdout, (r.stdout, r.stderr)
    assert "ext=permessage-deflate" in r.stdout


def test_compressed_connection_survives_a_reload(server_factory):
    srv = server_factory(workers=1, permessage_deflate=PMD, reload_handoff="on")
    ws = DeflateWS(srv.port)
    assert ws.echo_z(b"before the reload " * 10)[1] == b"before the reload " * 10
    old = set(srv.workers())
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: not (set(srv.workers()) & old) and srv.workers(), 10, what="new worker")
    rsv1, got = ws.echo_z(b"after the reload " * 10)
    assert rsv1 and got == b"after the reload " * 10
    ws.close()


def test_more_window_sizes_than_the_worker_keeps_deflaters_for(server_factory):
    """Each server_max_window_bits needs its own deflater; past the few a
    worker keeps, one is replaced in turn, and every echo still inflates."""
    srv = server_factory(workers=1, permessage_deflate=PMD)
    body = ("window sizes " * 300).encode()
    for rounds in range(2):
        for bits in (9, 10, 11, 12, 13, 14, 15):
            ws = DeflateWS(srv.port, offer=f"permessage-deflate; server_max_window_bits={bits}")
            assert ws.response.header("sec-websocket-extensions").endswith(
                f"server_max_window_bits={bits}")
            rsv1, got = ws.echo_z(body)
            assert rsv1 and got == body, (rounds, bits)
            ws.close()


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
@pytest.mark.parametrize("pmd", [PMD, TAKE], ids=["no-context", "context-takeover"])
def test_chromium_talks_permessage_deflate(server_factory, tmp_path, pmd):
    """A real browser offers permessage-deflate its own way (with
    client_max_window_bits); our answer, with client_no_context_takeover it
    did not offer (or with context kept both ways), must suit it, and its
    compressed frames must inflate. The page reports through the access
    log: its verdict is the query of a second WebSocket it opens."""
    import os
    import signal as sig
    sport = pick_free_port()
    srv = server_factory(workers=1, start=False, permessage_deflate=pmd,
                         status={"listen": f"127.0.0.1:{sport}"})
    srv.cfg["access_log"] = str(tmp_path / "access.log")
    srv.write_config(srv.cfg)
    srv.start()
    page = tmp_path / "page.html"
    page.write_text("""<!DOCTYPE html><html><body><script>
const url = 'ws://127.0.0.1:%d/echo';
const msg = JSON.stringify(Array.from({length: 2000}, (_, i) => ({id: i, name: 'item ' + i})));
const ws = new WebSocket(url);
let n = 0;
const report = (v) => {
  const r = new WebSocket(url + '?result=' + encodeURIComponent(v));
  r.onopen = () => { r.close(); ws.close(); };   // the lines are written as they end
};
ws.onopen = () => ws.send(msg);
ws.onmessage = (e) => {
  if (e.data !== msg) { report('mismatch'); return; }
  if (++n < 5) { ws.send(msg); return; }
  report('ok ' + n + ' ' + ws.extensions);
};
ws.onerror = () => report('error');
</script></body></html>""" % srv.port)
    log = tmp_path / "access.log"
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                                page.as_uri()], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        line = wait_until(lambda: next((l for l in (log.read_text().splitlines()
                                                    if log.exists() else [])
                                        if "result=" in l), None), 30, what="the page's verdict")
    finally:
        os.killpg(browser.pid, sig.SIGKILL)
        browser.wait(10)
    assert "result=ok%205%20permessage-deflate" in line, line
    assert ("client_no_context_takeover" in line) == (pmd is PMD), line
    m = scrape(sport)
    payload = val(m, "wsechod_payload_bytes_total", direction="out")
    wire = val(m, "wsechod_wire_bytes_total", direction="out")
    assert payload >= 5 * 50_000 and wire < payload / 4, (payload, wire)   # sent compressed
