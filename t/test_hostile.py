"""Hostile input: one client must not take a worker's memory or its
connection slots, and HTTP header handling is strict.

Memory is measured on the release build (RSS of the worker that owns the
connection), bounded by the configured limits plus a small constant."""

import os
import signal
import socket
import struct
import time

import pytest

from conftest import (OP_BIN, OP_CONT, OP_TEXT, RawWS, close_wait_count, connect,
                      encode_frame, http_exchange, proc_status_kib, recv_until_eof,
                      wait_until, ws_request)

MIB = 1 << 20


def owner_of(srv, ws):
    return srv.conn_owner(ws.local_port)


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def flood(sock, chunk, seconds):
    """Sends chunk over and over without reading, until the server stops
    reading (the socket stays full) or `seconds` pass. Returns bytes sent."""
    sock.setblocking(False)
    sent, off, deadline, full_since = 0, 0, time.monotonic() + seconds, None
    view = memoryview(chunk)
    while time.monotonic() < deadline:
        try:
            n = sock.send(view[off:])
            sent, off = sent + n, (off + n) % len(chunk)
            full_since = None
        except (BrokenPipeError, ConnectionResetError):
            break  # the server dropped us
        except BlockingIOError:
            full_since = full_since or time.monotonic()
            if time.monotonic() - full_since > 1.0:
                break  # nothing taken for a second: the server stopped reading
            time.sleep(0.005)
    sock.setblocking(True)
    return sent


# ---- 1. empty frames from a client that never reads --------------------------

@pytest.mark.parametrize("first_byte", [0x81, 0x82, 0x89], ids=["text", "binary", "ping"])
def test_empty_frames_from_a_non_reader_stay_within_max_pending_output(server_factory,
                                                                      first_byte):
    srv = server_factory(workers=1, release=True, max_pending_output="64k",
                         send_timeout="60s")
    ws = RawWS(srv.port)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pid = owner_of(srv, ws)
    before = rss_kib(pid)
    frame = bytes([first_byte, 0x80, 0, 0, 0, 0])
    sent = flood(ws.sock, frame * 20000, seconds=4.0)
    grown = rss_kib(pid) - before
    # Each empty echo or pong costs wslay a heap block: counted, the server
    # stops reading at 64 KiB of them (before: ~2 GiB in 6 s).
    assert sent > 0
    assert grown < 8 * 1024, f"worker grew {grown} KiB after {sent} bytes of empty frames"
    ws.abort()
    fresh = RawWS(srv.port)
    assert fresh.echo("still here") == b"still here"
    fresh.close()


# ---- 2. a big message in tiny fragments --------------------------------------

def test_message_in_one_byte_fragments_costs_at_most_max_message_size(server_factory):
    srv = server_factory(workers=1, release=True, max_message_size="1m")
    ws = RawWS(srv.port, timeout=30)
    pid = owner_of(srv, ws)
    before = proc_status_kib(pid, "VmRSS")
    n = MIB + 16
    data = (bytes([0x02, 0x81, 0, 0, 0, 0]) + b"a"
            + bytes([0x00, 0x81, 0, 0, 0, 0, 0x61]) * (n - 1))
    try:
        ws.sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed with 1009 before the rest arrived
    code, _reason, msgs = ws.recv_close(timeout=30)
    assert code == 1009 and msgs == []
    peak = proc_status_kib(pid, "VmHWM") - before
    # One reassembly buffer of at most 1 MiB (before: ~90 bytes of heap per
    # one-byte fragment, ~90 MiB here).
    assert peak < 6 * 1024, f"worker peak grew {peak} KiB for a 1 MiB message"


def test_fragmented_message_is_reassembled_and_echoed(server):
    ws = RawWS(server.port)
    parts = [bytes([65 + i % 26]) * (1 + i * 37) for i in range(40)]
    for i, p in enumerate(parts):
        ws.send_frame(OP_BIN if i == 0 else OP_CONT, p, fin=i == len(parts) - 1)
    assert ws.recv_message() == (OP_BIN, b"".join(parts))
    ws.send_frame(OP_TEXT, b"", fin=False)
    ws.send_frame(OP_CONT, b"", fin=True)
    assert ws.recv_message() == (OP_TEXT, b"")
    assert ws.close() == 1000


# ---- 3. memory given back after big messages ----------------------------------

def test_memory_is_given_back_after_big_messages(server_factory):
    srv = server_factory(workers=1, release=True, max_message_size="16m")
    probe = RawWS(srv.port)
    pid = owner_of(srv, probe)
    probe.close()
    time.sleep(0.2)
    before = rss_kib(pid)
    payload = b"z" * (16 * MIB)
    frame = encode_frame(OP_BIN, payload)
    clients = [RawWS(srv.port, timeout=30) for _ in range(3)]
    for _round in range(2):
        for ws in clients:
            ws.sock.sendall(frame)
        for ws in clients:
            assert ws.recv_message(timeout=30) == (OP_BIN, payload)
    for ws in clients:
        assert ws.close() == 1000
    wait_until(lambda: rss_kib(pid) - before < 4 * 1024, timeout=5,
               what="worker RSS back near its baseline")


# ---- the worker-wide ceiling ------------------------------------------------

def test_worker_memory_limit_closes_the_biggest_receiver_with_1009(server_factory):
    srv = server_factory(workers=1, worker_memory_limit="4m", max_message_size="8m")
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 6 * MIB) + b"\0\0\0\0"
    holders = []
    for _ in range(2):
        ws = RawWS(srv.port, timeout=10)
        ws.sock.sendall(header + b"h" * (3 * MIB))
        holders.append(ws)
        time.sleep(0.3)
    srv.wait_log("worker_memory_limit", what="the ceiling being enforced")
    codes = []
    for ws in holders:
        ws.sock.settimeout(0.5)
        try:
            codes.append(ws.recv_close(timeout=2)[0])
        except (socket.timeout, OSError, EOFError):
            codes.append(None)
    assert 1009 in codes, codes
    fresh = RawWS(srv.port)
    assert fresh.echo("room again") == b"room again"
    fresh.close()


def test_worker_memory_limit_drops_the_biggest_non_reader(server_factory):
    srv = server_factory(workers=1, worker_memory_limit="4m", max_pending_output="2m",
                         send_timeout="60s", max_message_size="1m")
    msg = encode_frame(OP_BIN, b"q" * 65536)
    readers = []
    for _ in range(4):
        ws = RawWS(srv.port, timeout=10)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        readers.append(ws)
        flood(ws.sock, msg, seconds=3.0)
    line = srv.wait_log("worker_memory_limit", what="the ceiling being enforced")
    assert "dropping" in line, line
    dropped = 0
    for ws in readers:
        try:
            _data, eof = recv_until_eof(ws.sock, timeout=0.5)
        except ConnectionResetError:
            eof = True  # the drop is a reset
        dropped += eof
    assert dropped >= 1
    fresh = RawWS(srv.port)
    assert fresh.echo("after the drop") == b"after the drop"
    fresh.close()


# ---- 4. a FIN that arrives with the last data -------------------------------

def _send_then_fin(port):
    """A frame and the FIN in one segment (TCP_CORK holds both)."""
    ws = RawWS(port)
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    ws.sock.sendall(encode_frame(OP_TEXT, b"last words"))
    ws.sock.shutdown(socket.SHUT_WR)
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    return ws


def test_fin_with_the_last_data_frees_the_slot(server_factory):
    srv = server_factory(workers=1, worker_connections=20, ping_interval=0, idle_timeout=0)
    for _round in range(3):
        clients = [_send_then_fin(srv.port) for _ in range(15)]
        for ws in clients:
            # The message that came with the FIN is still echoed, then the
            # server ends the connection (1006 to the module).
            assert ws.recv_message() == (OP_TEXT, b"last words")
            assert ws.wait_eof()
            ws.abort()
    wait_until(lambda: close_wait_count(srv.port) == 0, timeout=3,
               what="no server socket left in CLOSE-WAIT")
    late = [RawWS(srv.port) for _ in range(20)]  # every slot is free again
    for ws in late:
        assert ws.echo("slot") == b"slot"
        ws.close()


# ---- 5.-8. HTTP upgrade parsing ----------------------------------------------

def _fold(port, name, before, after):
    req = ws_request(port, omit=[name]).replace(
        b"\r\n\r\n", f"\r\n{name}: {before}\r\n {after}\r\n\r\n".encode())
    return http_exchange(port, req)[0]


@pytest.mark.parametrize("name,before,after", [
    ("Sec-WebSocket-Key", "garbage", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "8", "13"),
    ("Upgrade", "h2c", "websocket"),
    ("Upgrade", "", "websocket"),
])
def test_obs_fold_is_refused(server, name, before, after):
    resp = _fold(server.port, name, before, after)
    assert resp.status == 400
    assert b"folding" in resp.body


def test_max_header_size_above_80k_is_honoured(server_factory):
    srv = server_factory(workers=1, max_header_size="200k")
    filler = [("X-Filler-%d" % i, "f" * 1000) for i in range(110)]  # ~110 KiB
    req = ws_request(srv.port, extra=filler)
    assert len(req) > 100 * 1024
    ws = RawWS(srv.port, request=req)  # asserts the 101
    assert ws.echo("big headers") == b"big headers"
    ws.close()


def test_headers_over_a_1m_limit_get_431(server_factory):
    srv = server_factory(workers=1, max_header_size="1m")
    filler = [("X-Filler-%d" % i, "f" * 1000) for i in range(1100)]
    resp, _ = http_exchange(srv.port, ws_request(srv.port, extra=filler), timeout=10)
    assert resp.status == 431


def test_headers_over_the_default_limit_get_431(server):
    filler = [("X-Filler-%d" % i, "f" * 1000) for i in range(20)]
    resp, _ = http_exchange(server.port, ws_request(server.port, extra=filler))
    assert resp.status == 431


def test_repeated_subprotocol_lines_are_one_list(server_factory):
    srv = server_factory(workers=1, subprotocols=["chat", "superchat"])
    req = ws_request(srv.port, extra=[("Sec-WebSocket-Protocol", "chat"),
                                      ("Sec-WebSocket-Protocol", "other")])
    ws = RawWS(srv.port, request=req)  # asserts the 101
    assert ws.response.header("sec-websocket-protocol") == "chat"
    ws.close()
    req = ws_request(srv.port, extra=[("Sec-WebSocket-Protocol", "x, y"),
                                      ("Sec-WebSocket-Protocol", "z, superchat")])
    ws = RawWS(srv.port, request=req)
    assert ws.response.header("sec-websocket-protocol") == "superchat"
    ws.close()


def test_head_gets_405_without_a_body(server):
    s = connect(server.port)
    s.sendall(ws_request(server.port, method="HEAD"))
    data, eof = recv_until_eof(s)
    s.close()
    assert eof
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert body == b""


def test_426_lists_upgrade_in_connection(server):
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    resp, _ = http_exchange(server.port, req)
    assert resp.status == 426
    assert resp.header("upgrade") == "websocket"
    assert "upgrade" in [t.strip().lower() for t in resp.header("connection").split(",")]


@pytest.mark.parametrize("proto", ["HTTP/2.0", "HTTP/3.0"])
def test_http_2_and_later_get_505(server, proto):
    resp, _ = http_exchange(server.port, ws_request(server.port, proto=proto))
    assert resp.status == 505


def test_listener_closed_earlier_in_the_same_epoll_batch_is_left_alone(server_factory):
    """A reload command and new connections reach a stopped worker; it wakes
    up with both in one epoll batch: the command closes the listener, and
    the listener's event, later in the batch, must not be run."""
    srv = server_factory(workers=1)
    (old,) = srv.workers()
    os.kill(old, signal.SIGSTOP)
    new, socks = None, []
    try:
        srv.send_signal(signal.SIGHUP)
        new = wait_until(lambda: next((p for p in srv.workers() if p != old), None),
                         timeout=10, what="the new generation's worker")
        os.kill(new, signal.SIGSTOP)
        time.sleep(0.3)  # the master has told the old worker to drain by now
        for _ in range(4):
            s = connect(srv.port)
            s.sendall(ws_request(srv.port))
            socks.append(s)
    finally:
        os.kill(old, signal.SIGCONT)
        time.sleep(0.3)
        if new:
            os.kill(new, signal.SIGCONT)
    for s in socks:
        s.settimeout(5)
        assert s.recv(12) == b"HTTP/1.1 101"
        s.close()
    srv.wait_log("exiting", what="the old worker leaving")
    assert "Bad file descriptor" not in srv.log_text()


# ---- 9. what was complete before a protocol error is echoed ------------------

def test_complete_message_before_a_violation_is_echoed_first(server):
    ws = RawWS(server.port)
    ws.sock.sendall(encode_frame(OP_TEXT, b"ab", fin=False)
                    + encode_frame(OP_CONT, b"cd", fin=True)
                    + encode_frame(OP_CONT, b"x", fin=True))  # nothing to continue
    code, _reason, msgs = ws.recv_close()
    assert msgs == [(OP_TEXT, b"abcd")]
    assert code == 1002
