"""No leaks across connection churn: ~500 connections of every kind, then a
graceful stop. The ASan build runs LeakSanitizer when each worker (and the
master) exits; the autouse sanitizer check fails the test on any report."""

import socket
import struct
import time

from conftest import (OP_BIN, OP_CLOSE, OP_PING, OP_TEXT, RawWS, close_payload, connect,
                      encode_frame, recv_until_eof, ws_request)


def _rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _clean(port, i):
    ws = RawWS(port)
    ws.send_frame(OP_TEXT, b"a" * (i % 300), fin=False)
    ws.send_frame(OP_PING, b"p")
    ws.send_frame(0, b"b")
    ws.recv_message()
    assert ws.close(1000 + (i % 2) * 2000) in (1000, 3000)


def _abort_mid_message(port, i):
    ws = RawWS(port)
    ws.sock.sendall(encode_frame(OP_BIN, b"x" * 70000)[:30000])
    _rst(ws.sock)


def _abort_with_unread_echo(port, i):
    ws = RawWS(port)
    ws.sock.sendall(encode_frame(OP_BIN, b"y" * 200000))
    time.sleep(0.002)
    _rst(ws.sock) if i % 2 else ws.sock.close()


def _protocol_error(port, i):
    ws = RawWS(port)
    bad = [encode_frame(OP_TEXT, b"u", mask=False), encode_frame(5, b""),
           encode_frame(OP_TEXT, b"\xff"), encode_frame(OP_CLOSE, close_payload(1005)),
           encode_frame(OP_TEXT, b"x" * 3000)][i % 5]       # the last: 1009
    ws.sock.sendall(encode_frame(OP_TEXT, b"frag", fin=False) + bad if i % 3 == 0 else bad)
    code, _r, _m = ws.recv_close()
    assert code in (1002, 1007, 1009)
    if i % 2:
        ws.wait_eof(2.0)
    ws.abort()


def _handshake_error(port, i):
    s = connect(port)
    reqs = [b"GET / HTTP/1.0\r\n\r\n", ws_request(port, key="short"),
            ws_request(port, path="/nope"), b"\x16\x03\x01garbage\r\n\r\n",
            ws_request(port, extra=[("X-Pad", "p" * 2000)])]
    s.sendall(reqs[i % len(reqs)])
    if i % 2:
        data, _ = recv_until_eof(s, 3.0)
        assert data.startswith(b"HTTP/1.1 4"), data
        s.close()
    else:
        _rst(s)


def _half_request(port, i):
    s = connect(port)
    s.sendall(ws_request(port)[:30])
    return s


def test_no_leak_across_connection_churn(server_factory):
    srv = server_factory(workers=2, max_message_size="2k", max_header_size="1k",
                         handshake_timeout="300ms", close_timeout="300ms")
    kinds = [_clean, _abort_mid_message, _abort_with_unread_echo, _protocol_error,
             _handshake_error]
    held = []
    for i in range(500):
        kinds[i % len(kinds)](srv.port, i)
        if i % 25 == 0:
            held.append(_half_request(srv.port, i))    # will get 408
        if i % 50 == 0:
            held.append(RawWS(srv.port))               # open WebSockets at stop time
    time.sleep(0.5)                                    # the 408s go out
    for s in held:
        if isinstance(s, socket.socket):
            data, _ = recv_until_eof(s, 2.0)
            assert data.startswith(b"HTTP/1.1 408 "), data
            s.close()
    ok = RawWS(srv.port)
    assert ok.echo("still serving") == b"still serving"
    ok.close()
    workers = srv.workers()
    assert srv.stop(timeout=15) == 0
    for pid in workers:
        assert f"worker {pid} (slot" in srv.log_text()
    assert "killed by signal" not in srv.log_text()
