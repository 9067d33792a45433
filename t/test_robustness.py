"""Abrupt clients, odd TCP segmentation and many connections: the server
must keep serving, its workers must not die, and nothing may trip the
sanitizers."""

import socket
import struct
import time

from conftest import (OP_BIN, OP_TEXT, RawWS, encode_frame, wait_until)


def assert_no_worker_died(srv, before):
    assert srv.workers() == before, "a worker was replaced"
    assert "killed by signal" not in srv.log_text(), srv.log_text()[-2000:]
    assert "exited with status" not in srv.log_text(), srv.log_text()[-2000:]


def test_frame_sent_one_byte_at_a_time(server):
    ws = RawWS(server.port)
    data = encode_frame(OP_TEXT, b"x" * 300) + encode_frame(OP_BIN, b"\x01\x02\x03")
    for i in range(len(data)):
        ws.sock.sendall(data[i:i + 1])
        if i % 50 == 0:
            time.sleep(0.001)
    assert ws.recv_message() == (OP_TEXT, b"x" * 300)
    assert ws.recv_message() == (OP_BIN, b"\x01\x02\x03")
    assert ws.close() == 1000


def test_many_frames_in_one_write(server):
    ws = RawWS(server.port)
    ws.sock.sendall(b"".join(encode_frame(OP_TEXT, f"n{i}".encode()) for i in range(300)))
    for i in range(300):
        assert ws.recv_message() == (OP_TEXT, f"n{i}".encode())
    assert ws.close() == 1000


def _rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_vanishing_mid_message_and_mid_echo(server_factory):
    srv = server_factory(workers=2)
    before = srv.workers()
    big = b"b" * (1 << 20)
    for i in range(6):
        ws = RawWS(srv.port)
        if i % 2:
            # half a frame, then a reset
            ws.sock.sendall(encode_frame(OP_BIN, big)[: 300000])
        else:
            # a full 1 MiB message whose echo is never read, then a reset
            ws.sock.sendall(encode_frame(OP_BIN, big))
            time.sleep(0.05)
        _rst_close(ws.sock)
    # plain FIN in the middle of a frame header and in the handshake
    ws = RawWS(srv.port)
    ws.sock.sendall(b"\x82\xfe")
    ws.sock.close()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    _rst_close(s)
    time.sleep(0.3)
    assert_no_worker_died(srv, before)
    for _ in range(4):
        ok = RawWS(srv.port)
        assert ok.echo("alive") == b"alive"
        assert ok.close() == 1000


def test_many_concurrent_connections(server_factory):
    srv = server_factory(workers=2)
    before = srv.workers()
    conns = [RawWS(srv.port) for _ in range(300)]
    try:
        for i, c in enumerate(conns):
            c.send_frame(OP_TEXT, f"c{i}".encode())
        for i, c in enumerate(conns):
            assert c.recv_message() == (OP_TEXT, f"c{i}".encode())
    finally:
        for c in conns:
            c.abort()
    # the server notices all the hang-ups and keeps working
    time.sleep(0.2)
    ws = wait_until(lambda: RawWS(srv.port), 5, what="new connection")
    assert ws.echo("after 300") == b"after 300"
    ws.close()
    assert_no_worker_died(srv, before)
