"""HTTP upgrade handshake: every error answer and the success path."""

import base64
import socket
import time

import pytest

from conftest import (OP_TEXT, RawWS, accept_for, connect, encode_frame,
                      http_exchange, make_key, wait_until, ws_request)


def assert_error(resp, eof, status):
    assert resp.status == status, resp
    assert resp.version == "HTTP/1.1", resp
    assert eof, "server did not close the connection after the error"
    # a short text body that gives the reason
    assert resp.body.strip(), f"empty body: {resp!r}"
    ctype = resp.header("content-type")
    if ctype is not None:
        assert ctype.startswith("text/"), ctype
    clen = resp.header("content-length")
    if clen is not None:
        assert int(clen) == len(resp.body), resp
    assert resp.header("sec-websocket-accept") is None


# ---------------------------------------------------------------- success

def test_success_101_with_correct_accept(server):
    key = make_key()
    s = connect(server.port)
    try:
        s.sendall(ws_request(server.port, key=key))
        data = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101 Switching Protocols"), data
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    assert headers.get("sec-websocket-accept") == accept_for(key), headers
    assert headers.get("upgrade", "").lower() == "websocket", headers
    assert "upgrade" in headers.get("connection", "").lower(), headers
    # no extension was offered, none may be accepted
    assert "sec-websocket-extensions" not in headers


def test_rfc6455_sample_key(server):
    # the example from RFC 6455 section 1.3
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    req = ws_request(server.port, key=key)
    ws = RawWS(server.port, request=req)
    assert ws.response.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ws.echo("x") == b"x"
    ws.close()


@pytest.mark.parametrize("kw", [
    dict(upgrade="WebSocket"),
    dict(upgrade="WEBSOCKET"),
    dict(connection="keep-alive, Upgrade"),
    dict(connection="UPGRADE"),
    dict(path="/echo"),
    dict(path="/echo?x=1&y=2"),
    dict(path="/?q"),
    dict(extra=[("Origin", "http://example.com"), ("User-Agent", "pytest")]),
    dict(upgrade="foo/1, websocket"),
], ids=["upgrade-mixed-case", "upgrade-upper", "connection-list",
        "connection-upper", "second-route", "route-with-query",
        "root-with-query", "extra-headers", "upgrade-token-list"])
def test_success_variants(server, kw):
    req = ws_request(server.port, **kw)
    ws = RawWS(server.port, request=req)
    assert ws.response.status == 101
    assert ws.echo("variant") == b"variant"
    ws.close()


def test_lowercase_header_names(server):
    key = make_key()
    req = ws_request(server.port, key=key).decode()
    head, _, _ = req.partition("\r\n\r\n")
    first, *rest = head.split("\r\n")
    rest = [line.split(":", 1)[0].lower() + ":" + line.split(":", 1)[1] for line in rest]
    req = ("\r\n".join([first] + rest) + "\r\n\r\n").encode()
    ws = RawWS(server.port, request=req)
    assert ws.response.header("sec-websocket-accept") == accept_for(key)
    assert ws.echo("lower") == b"lower"
    ws.close()


def test_pipelined_frame_is_processed(server):
    """A masked text frame in the same write as the request is echoed after
    the 101."""
    key = make_key()
    req = ws_request(server.port, key=key)
    s = connect(server.port)
    try:
        s.sendall(req + encode_frame(OP_TEXT, b"pipelined!"))
        data = b""
        deadline = time.monotonic() + 5
        want = b"\x81\x0apipelined!"
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].startswith(want):
                break
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), data
    assert accept_for(key).encode() in head
    assert rest.startswith(want), f"echo of pipelined frame missing: {rest!r}"


def test_pipelined_request_and_several_frames_via_rawws(server):
    frames = b"".join(encode_frame(OP_TEXT, f"m{i}".encode()) for i in range(5))
    ws = RawWS(server.port, trailing=frames)
    for i in range(5):
        op, data = ws.recv_message()
        assert (op, data) == (OP_TEXT, f"m{i}".encode())
    assert ws.close() == 1000


# ---------------------------------------------------------------- 400

@pytest.mark.parametrize("raw", [
    b"\x00\x01\x02\x03garbage\xff\xfe\r\n\r\n",
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
], ids=["binary-garbage", "text-garbage", "header-without-colon"])
def test_400_malformed(server, raw):
    resp, eof = http_exchange(server.port, raw)
    assert_error(resp, eof, 400)


@pytest.mark.parametrize("kw", [
    dict(omit=["Host"]),
    dict(upgrade="h2c"),
    dict(omit=["Upgrade"]),
    dict(connection="keep-alive"),
    dict(omit=["Connection"]),
    dict(omit=["Sec-WebSocket-Key"]),
    dict(key=base64.b64encode(b"x" * 15).decode()),
    dict(key=base64.b64encode(b"x" * 17).decode()),
    dict(key="!!!not-base64!!!"),
    dict(key=""),
    dict(proto="HTTP/1.0"),
], ids=["no-host", "upgrade-h2c", "no-upgrade", "connection-keep-alive",
        "no-connection", "no-key", "key-15-bytes", "key-17-bytes",
        "key-not-base64", "key-empty", "http-1.0"])
def test_400_bad_websocket_request(server, kw):
    resp, eof = http_exchange(server.port, ws_request(server.port, **kw))
    assert_error(resp, eof, 400)


# ---------------------------------------------------------------- 426

@pytest.mark.parametrize("kw", [
    dict(omit=["Sec-WebSocket-Version"]),
    dict(version="8"),
    dict(version="14"),
], ids=["no-version", "version-8", "version-14"])
def test_426_bad_version(server, kw):
    resp, eof = http_exchange(server.port, ws_request(server.port, **kw))
    assert_error(resp, eof, 426)
    assert resp.header("sec-websocket-version") == "13", resp


def test_426_plain_http_get_to_route(server):
    req = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
           "Accept: */*\r\n\r\n").encode()
    resp, eof = http_exchange(server.port, req)
    assert_error(resp, eof, 426)
    assert resp.header("sec-websocket-version") == "13", resp


# ---------------------------------------------------------------- 404 / 405

@pytest.mark.parametrize("path", ["/nope", "/echo/", "/ech", "/echo/x"])
def test_404_unknown_path_valid_ws_request(server, path):
    resp, eof = http_exchange(server.port, ws_request(server.port, path=path))
    assert_error(resp, eof, 404)


def test_404_unknown_path_plain_get(server):
    req = f"GET /missing HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    resp, eof = http_exchange(server.port, req)
    assert_error(resp, eof, 404)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_405_non_get_on_route(server, method):
    req = (f"{method} / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    resp, eof = http_exchange(server.port, req)
    assert_error(resp, eof, 405)
    allow = resp.header("allow")
    assert allow is not None and "GET" in allow, resp


def test_405_post_websocket_request(server):
    resp, eof = http_exchange(server.port, ws_request(server.port, method="POST"))
    assert_error(resp, eof, 405)
    assert "GET" in (resp.header("allow") or ""), resp


# ---------------------------------------------------------------- 431

def test_431_headers_over_max_header_size(server_factory):
    srv = server_factory(workers=1, max_header_size="1k")
    req = ws_request(srv.port, extra=[("X-Pad", "a" * 2048)])
    resp, eof = http_exchange(srv.port, req)
    assert_error(resp, eof, 431)
    # below the limit the same request shape succeeds
    ok = ws_request(srv.port, extra=[("X-Pad", "a" * 300)])
    assert len(ok) < 1024
    ws = RawWS(srv.port, request=ok)
    assert ws.echo("small headers") == b"small headers"
    ws.close()


def test_431_many_headers(server_factory):
    srv = server_factory(workers=1, max_header_size="1k")
    extra = [(f"X-H{i}", "v" * 20) for i in range(80)]
    resp, eof = http_exchange(srv.port, ws_request(srv.port, extra=extra))
    assert_error(resp, eof, 431)


# ---------------------------------------------------------------- 503

def test_503_at_worker_connections(server_factory):
    srv = server_factory(workers=1, worker_connections=1)
    # the readiness probe's connection may take a moment to be released
    holder = wait_until(lambda: _try_ws(srv.port), 5, what="first connection")
    try:
        resp, eof = http_exchange(srv.port, ws_request(srv.port))
        assert_error(resp, eof, 503)
        assert holder.echo("still here") == b"still here"
    finally:
        assert holder.close() == 1000
    # capacity is back once the first connection is gone
    again = wait_until(lambda: _try_ws(srv.port), 5, what="connection after release")
    assert again.echo("again") == b"again"
    again.close()


def _try_ws(port):
    try:
        return RawWS(port)
    except (AssertionError, EOFError, OSError):
        return None


# ---------------------------------------------------------------- misc

def test_error_response_then_server_still_serves(server):
    for _ in range(3):
        resp, eof = http_exchange(server.port, b"garbage\r\n\r\n")
        assert resp.status == 400
    ws = RawWS(server.port)
    assert ws.echo("fine") == b"fine"
    ws.close()


def test_request_split_over_many_writes(server):
    key = make_key()
    req = ws_request(server.port, key=key)
    s = connect(server.port)
    try:
        for i in range(0, len(req), 7):
            s.sendall(req[i:i + 7])
            time.sleep(0.002)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, f"closed early: {data!r}"
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 101"), data
    assert accept_for(key).encode() in data


def test_client_hangup_mid_request_does_not_hurt(server):
    s = connect(server.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpg")
    s.close()
    ws = RawWS(server.port)
    assert ws.echo("ok") == b"ok"
    ws.close()


def test_431_when_headers_arrive_in_pieces(server_factory):
    srv = server_factory(workers=1, max_header_size="1k")
    req = ws_request(srv.port, extra=[(f"X-P{i}", "p" * 100) for i in range(20)])
    s = connect(srv.port)
    try:
        for i in range(0, len(req), 200):
            try:
                s.sendall(req[i:i + 200])
            except OSError:
                break  # the server may already have answered and closed
            time.sleep(0.01)
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 431"), data


def test_incomplete_request_times_out(server_factory):
    """A client that never finishes its request is dropped after
    handshake_timeout (with a 408 if anything is sent)."""
    srv = server_factory(workers=1, handshake_timeout="300ms")
    s = connect(srv.port)
    try:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data = b""
        eof = False
        while time.monotonic() - t0 < 5:
            s.settimeout(max(0.01, 5 - (time.monotonic() - t0)))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except ConnectionResetError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            data += chunk
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert eof, f"connection still open after {elapsed:.1f}s"
    assert elapsed >= 0.2, f"dropped after {elapsed:.2f}s, before handshake_timeout"
    if data:
        assert data.startswith(b"HTTP/1.1 408"), data
