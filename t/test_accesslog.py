"""The access log: a line per WebSocket that ended and per refused
handshake, text or JSON, buffered per worker, reopened on SIGUSR1; through
websockets, raw sockets, signals and the files themselves."""

import json
import os
import re
import signal
import socket
import struct
import time

import pytest

from conftest import RawWS, http_exchange, run_async, run_cli, wait_until, ws_connect

TEXT_RE = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$')
PAIR_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_text(line):
    m = TEXT_RE.match(line)
    assert m, line
    out = {"time": m.group(1)}
    for k, v in PAIR_RE.findall(m.group(2)):
        out[k] = json.loads(v) if v.startswith('"') else None if v == "-" else int(v)
    return out


def lines(srv, fmt="text"):
    p = srv.tmp / "access.log"
    if not p.exists():
        return []
    text = p.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(l) if fmt == "json" else parse_text(l) for l in text.splitlines()]


def wait_lines(srv, pred, fmt="text", timeout=5):
    return wait_until(lambda: [l for l in lines(srv, fmt) if pred(l)] or None, timeout,
                      what="access log lines")


@pytest.fixture
def logged(server_factory):
    """A server logging to <tmp>/access.log in fmt."""
    def make(fmt="text", workers=1, **kw):
        srv = server_factory(workers=workers, start=False, access_log_format=fmt,
                             subprotocols=["chat", "v2"], **kw)
        srv.cfg["access_log"] = str(srv.tmp / "access.log")
        srv.write_config(srv.cfg)
        srv.start()
        return srv
    return make


def test_text_line_for_each_websocket_and_refusal(logged):
    srv = logged("text")
    t0 = time.time()

    async def run():
        async with ws_connect(srv.port, "/echo?room=7&x=%22q%22", subprotocols=["v2"]) as ws:
            for n in (5, 50, 500):
                await ws.send(b"b" * n)
                await ws.recv()
            await ws.send("text")
            await ws.recv()
    run_async(run())
    r, _ = http_exchange(srv.port, b"GET /missing?z=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 404
    ws = wait_lines(srv, lambda l: l["event"] == "ws" and l["path"].startswith("/echo"))[0]
    assert ws["pid"] in srv.workers() and ws["generation"] == 1
    assert ws["client"].startswith("127.0.0.1:")
    assert ws["path"] == '/echo?room=7&x=%22q%22'
    assert ws["subprotocol"] == "v2"
    assert (ws["messages_in"], ws["messages_out"]) == (4, 4)
    assert (ws["bytes_in"], ws["bytes_out"]) == (559, 559)
    assert ws["wire_bytes_in"] > 559 + 4 * 6 and ws["wire_bytes_out"] > 559 + 129
    assert (ws["close_sent"], ws["close_received"], ws["closed_by"]) == (1000, 1000, "client")
    assert ws["handoffs"] == 0
    assert 0 <= ws["duration_ms"] < (time.time() - t0) * 1000 + 50
    stamp = time.mktime(time.strptime(ws["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(stamp - time.time()) < 30                       # UTC, not local time
    ref = wait_lines(srv, lambda l: l["event"] == "refused")[0]
    assert (ref["status"], ref["path"], ref["reason"]) == \
        (404, "/missing?z=1", "no WebSocket route for this path")
    assert ref["client"].startswith("127.0.0.1:")


def test_json_lines_and_who_closed(logged):
    srv = logged("json", idle_timeout="1s", ping_interval="0")
    idle = RawWS(srv.port, path="/echo")                    # the server will time it out
    assert idle.echo(b"hi") == b"hi"
    reset = RawWS(srv.port)
    assert reset.echo(b"x") == b"x"
    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.abort()                          # an RST, no close frame: the peer is still named
    srv_closed = RawWS(srv.port)
    srv_closed.send_frame(1, b"\xff")                       # invalid UTF-8: we close 1007
    assert srv_closed.recv_close()[0] == 1007
    srv_closed.abort()
    assert idle.recv_close(timeout=5)[0] == 1001
    idle.send_frame(8, b"\x03\xe9")
    idle.abort()
    got = wait_until(lambda: (lambda g: g if len(g) >= 4 else None)(
        [l for l in lines(srv, "json") if l["event"] == "ws"]), 8, what="4 ws lines")
    by = {l["closed_by"]: l for l in got}
    assert by["timeout"]["close_sent"] == 1001 and by["timeout"]["path"] == "/echo"
    assert by["reset"]["close_sent"] is None and by["reset"]["close_received"] is None
    assert by["server"]["close_sent"] == 1007
    assert by["client"]["close_received"] == 1000             # the start-up probe
    for l in got:
        assert set(l) == {"time", "pid", "generation", "event", "client", "path", "subprotocol",
                          "duration_ms", "messages_in", "messages_out", "bytes_in", "bytes_out",
                          "wire_bytes_in", "wire_bytes_out", "close_sent", "close_received",
                          "closed_by", "handoffs"}
        assert l["subprotocol"] is None and isinstance(l["duration_ms"], int)
        assert l["client"].startswith("127.0.0.1:") and not l["client"].endswith(":0"), l


def test_a_handed_over_connection_is_one_line_with_its_whole_life(logged):
    srv = logged("json", reload_handoff="on", workers=1)
    old = set(srv.workers())

    async def run():
        async with ws_connect(srv.port, "/echo", subprotocols=["chat"]) as ws:
            t0 = time.monotonic()
            await ws.send("before")
            await ws.recv()
            for _ in range(2):
                srv.send_signal(signal.SIGHUP)
                # Gone, not just draining: a draining worker may still hold
                # the connection, and hand it straight to the next generation.
                wait_until(lambda: not (set(srv.workers(include_draining=True)) & old)
                           and len(srv.workers()) == 1, 10, what="old workers gone")
                old.clear()
                old.update(srv.workers())
                await ws.send("after")
                assert await ws.recv() == "after"
            return time.monotonic() - t0
    lived = run_async(run(), timeout=40)
    l = wait_lines(srv, lambda l: l["event"] == "ws" and l["path"] == "/echo", "json")[0]
    assert l["handoffs"] == 2
    assert l["generation"] == 3
    assert (l["messages_in"], l["messages_out"]) == (3, 3)
    assert l["bytes_in"] == len("before") + 2 * len("after")
    assert l["subprotocol"] == "chat"
    assert l["duration_ms"] >= lived * 1000 - 5      # counted from the first worker's accept


def test_lines_are_buffered_but_out_within_a_second_and_at_exit(logged):
    srv = logged("text")
    ws = RawWS(srv.port, path="/echo")
    assert ws.echo(b"a") == b"a"
    ws.close()
    t0 = time.monotonic()
    wait_lines(srv, lambda l: l["path"] == "/echo", timeout=3)
    assert time.monotonic() - t0 < 2.5
    ws = RawWS(srv.port, path="/echo?last")
    assert ws.echo(b"b") == b"b"
    ws.close()
    assert srv.stop() == 0                      # right away: the exit flushes it
    assert [l for l in lines(srv) if l["path"] == "/echo?last"]


def test_sigusr1_reopens_the_access_log(logged):
    srv = logged("text")
    log = srv.tmp / "access.log"
    wait_until(lambda: log.exists() and log.stat().st_size > 0, 5, what="the probe's line")
    os.rename(log, srv.tmp / "access.log.1")
    srv.send_signal(signal.SIGUSR1)
    srv.wait_log("log files reopened")
    ws = RawWS(srv.port, path="/echo?after-rotate")
    assert ws.echo(b"c") == b"c"
    ws.close()
    wait_lines(srv, lambda l: l["path"] == "/echo?after-rotate")
    assert "after-rotate" not in (srv.tmp / "access.log.1").read_text()


def test_access_log_is_off_by_default(server):
    assert RawWS(server.port).echo(b"x") == b"x"
    assert not (server.tmp / "access.log").exists()


@pytest.mark.parametrize("text,msg", [
    ("access_log_format: xml\n", "1:20: access_log_format: 'xml' is not text or json"),
    ("access_log: ''\n", "1:13: access_log: expected a path"),
])
def test_bad_access_log_keys(tmp_path, san_dir, text, msg):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    r = run_cli(["-t", "-c", p], san_dir)
    assert r.returncode != 0 and f"{p}:{msg}" in r.stderr, r.stderr


def test_unwritable_access_log_refuses_start_and_reload(server_factory):
    srv = server_factory(workers=1, start=False, access_log="/nonexistent/dir/a.log")
    srv.start(wait=False)
    assert srv.wait_exit(10) != 0
    assert "cannot open access_log /nonexistent/dir/a.log" in srv.stderr_text()
