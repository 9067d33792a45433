"""The modules shipped with wsechod, through real clients: echo's per-route
`delay`, the `stream` module, their per-route configuration keys and what
happens to their connections on reload (module API v2)."""

import asyncio
import signal
import socket
import time

import pytest

from conftest import (RawWS, close_payload, encode_frame, proc_status_kib, run_async, run_cli,
                      wait_until, write_config, ws_connect, OP_TEXT)

ROUTES = {
    "/": "echo",
    "/slow": {"module": "echo", "delay": "250ms"},
    "/stream": {"module": "stream", "interval": "50ms", "size": "1k", "count": 0},
    "/five": {"module": "stream", "interval": "20ms", "size": 16, "count": 5},
}


def modules_server(server_factory, workers=1, routes=ROUTES, **kw):
    return server_factory(workers=workers, routes=routes, **kw)


def seq_of(msg):
    """A stream message: its number in decimal, then '.' up to its size."""
    return int(msg.rstrip(".")) if msg.rstrip(".") else None


# ---------------------------------------------------------------- config

def check(tmp_path, san_dir, routes_yaml):
    text = ('listen: ["127.0.0.1:1"]\npid_file: /tmp/x.pid\n'   # lines 1-2
            f'routes:\n{routes_yaml}')                          # routes at line 3
    path = write_config(tmp_path / "c.yaml", text)
    return path, run_cli(["-t", "-c", path], san_dir)


def test_route_mappings_with_module_keys_are_accepted(tmp_path, san_dir):
    path, r = check(tmp_path, san_dir,
                    "  /: echo\n"
                    "  /slow: {module: echo, delay: 250ms}\n"
                    "  /s: {module: stream, interval: 100ms, size: 1k, count: 0}\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("line, expect", [
    ("  /slow: {module: echo, dellay: 250ms}\n", "module echo has no key 'dellay'"),
    ("  /slow: {module: echo, delay: soon}\n", "delay: expected a duration"),
    ("  /s: {module: stream, size: 64m}\n", "size: 64m is out of range"),
    ("  /s: {module: stream, interval: 0}\n", "interval: 0 is out of range"),
    ("  /s: {delay: 1s}\n", "a mapping needs 'module'"),
    ("  /s: {module: nosuch}\n", "unknown module 'nosuch'"),
])
def test_bad_module_keys_name_file_line_and_column(tmp_path, san_dir, line, expect):
    path, r = check(tmp_path, san_dir, "  /: echo\n" + line)
    assert r.returncode == 1, r.stderr
    assert f"{path}:5:" in r.stderr and expect in r.stderr, r.stderr


# ---------------------------------------------------------------- echo delay

def test_delayed_echo_arrives_late_in_order_and_leaves_other_routes_alone(server_factory):
    srv = modules_server(server_factory)

    async def scenario():
        async with ws_connect(srv.port, "/slow") as slow, ws_connect(srv.port, "/") as fast:
            t0 = time.monotonic()
            for i in range(20):
                await slow.send(f"m{i}")
            await fast.send("quick")
            assert await fast.recv() == "quick"
            fast_done = time.monotonic() - t0
            got = [await slow.recv() for _ in range(20)]
            slow_done = time.monotonic() - t0
            assert got == [f"m{i}" for i in range(20)]
            await slow.send(b"\x00bin")
            assert await slow.recv() == b"\x00bin"       # types kept
            return fast_done, slow_done
    fast_done, slow_done = run_async(scenario())
    assert fast_done < 0.2, fast_done                  # not held behind /slow
    assert 0.24 <= slow_done < 2.0, slow_done


def test_delayed_messages_count_against_max_pending_output(server_factory):
    """A client that sends much faster than it is answered stops being read
    (the delayed bytes count like queued output) and nothing is lost."""
    srv = modules_server(server_factory, max_pending_output="64k", release=True,
                         routes={"/": "echo", "/slow": {"module": "echo", "delay": "300ms"}})
    ws = RawWS(srv.port, path="/slow")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    payload = b"x" * 4096
    ws.sock.settimeout(0.05)
    sent = 0
    t_end = time.monotonic() + 0.25
    while time.monotonic() < t_end:              # ~1 MB offered before any echo is due
        try:
            ws.sock.sendall(encode_frame(OP_TEXT, payload))
            sent += 1
        except (socket.timeout, BlockingIOError):
            break
    ws.sock.settimeout(None)
    rss = proc_status_kib(next(iter(srv.workers())), "VmRSS")
    for _ in range(sent):
        assert ws.recv_message(timeout=20)[1] == payload
    assert sent < 200, sent                      # the server stopped reading at ~64 KiB held
    assert rss < 24 * 1024, rss
    ws.close()


# ---------------------------------------------------------------- stream

def test_stream_pushes_numbered_messages_and_closes_after_count(server_factory):
    srv = modules_server(server_factory)

    async def scenario():
        async with ws_connect(srv.port, "/five") as ws:
            got = [m async for m in ws]
            return got, ws.close_code, ws.close_reason
    got, code, reason = run_async(scenario())
    assert [seq_of(m) for m in got] == [0, 1, 2, 3, 4]
    assert all(len(m) == 16 for m in got)
    assert (code, reason) == (1000, "stream complete")


def test_stream_rate_size_and_from(server_factory):
    srv = modules_server(server_factory)

    async def scenario():
        async with ws_connect(srv.port, "/stream?from=41&x=y") as ws:
            t0 = time.monotonic()
            got = [await ws.recv() for _ in range(10)]
            return got, time.monotonic() - t0
    got, took = run_async(scenario())
    assert [seq_of(m) for m in got] == list(range(41, 51))
    assert all(len(m) == 1024 and m.endswith(".") for m in got)
    assert 0.40 <= took < 2.0, took              # 10 at 50 ms


def test_stream_respects_backpressure(server_factory):
    """A client that stops reading gets no pile-up: ticks are skipped while
    max_pending_output is unread, the worker stays small, and numbers stay
    consecutive once it reads again."""
    srv = modules_server(server_factory, max_pending_output="64k", release=True, routes={
        "/": "echo", "/fast": {"module": "stream", "interval": "1ms", "size": "16k"}})
    ws = RawWS(srv.port, path="/fast")
    time.sleep(2.0)                              # 2,000 ticks: 32 MB if they were queued
    rss = proc_status_kib(next(iter(srv.workers())), "VmRSS")
    nums = [seq_of(ws.recv_message(timeout=5)[1].decode()) for _ in range(300)]
    assert nums == list(range(300))
    assert rss < 24 * 1024, rss
    ws.close()


# ---------------------------------------------------------------- reload

def test_stream_and_delayed_echo_move_on_reload_and_go_on(server_factory):
    srv = modules_server(server_factory, workers=1, reload_handoff=None, shutdown_timeout="10s")

    async def scenario():
        async with ws_connect(srv.port, "/stream") as st, ws_connect(srv.port, "/slow") as sl:
            port = st.local_address[1]
            first_owner = srv.conn_owner(port)
            await sl.send("before")
            assert await sl.recv() == "before"
            nums = [seq_of(await st.recv()) for _ in range(5)]
            srv.send_signal(signal.SIGHUP)
            srv.wait_log("generation 2 ready", what="generation 2 ready")
            wait_until(lambda: srv.conn_owner(port) not in (None, first_owner), 10,
                       what="stream moved to the new worker")
            nums += [seq_of(await st.recv()) for _ in range(20)]
            await sl.send("after")
            assert await sl.recv() == "after"
            return nums
    nums = run_async(scenario(), timeout=40)
    assert nums == list(range(len(nums))), nums  # nothing lost, nothing repeated
    log = srv.log_text()
    assert "handing 2 connections" in log
    assert "1012" not in log


# ---------------------------------------------------------------- broadcast

ROOM = {"/": "echo", "/room": "broadcast", "/self": {"module": "broadcast", "self": 1}}


def test_broadcast_reaches_members_that_send_nothing(server_factory):
    """Sending to another connection wakes it: the listeners never send,
    so nothing but the sender's message can make them write."""
    srv = modules_server(server_factory, routes=ROOM)

    async def scenario():
        async with ws_connect(srv.port, "/room") as a, ws_connect(srv.port, "/room") as b, \
                ws_connect(srv.port, "/room") as c, ws_connect(srv.port, "/self") as s:
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await a.send("to all")
            got = [await asyncio.wait_for(x.recv(), 2) for x in (b, c)]
            took = time.monotonic() - t0
            await s.send(b"me too")
            mine = await asyncio.wait_for(s.recv(), 2)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.recv(), 0.3)   # not to the sender
            return got, took, mine
    got, took, mine = run_async(scenario())
    assert got == ["to all", "to all"]
    assert took < 0.5, took                  # not waiting for a read or a ping
    assert mine == b"me too"                 # self: 1


def test_broadcast_connections_are_drained_with_1012_on_reload(server_factory):
    """broadcast has no export: on a reload with handoff its connections get
    1012, while the echo connection beside them moves."""
    srv = modules_server(server_factory, routes=ROOM, reload_handoff=None, shutdown_timeout="10s")
    member, echo = RawWS(srv.port, path="/room"), RawWS(srv.port, path="/")
    assert echo.echo(b"before") == b"before"
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready", what="generation 2 ready")
    code, reason, _ = member.recv_close(timeout=10)
    assert (code, reason) == (1012, b"server restarting")
    assert echo.echo(b"after") == b"after"
    echo.close()
