"""Strict RFC 6455 conformance, enforced limits and hostile input.

Every protocol rule is driven with raw frames and checked for the exact close
code, and for the end of the conversation: after its close frame the server
sends nothing more and ends the TCP connection (FIN, then it reads until the
client hangs up, at most close_timeout).

To keep the run short the tests share a few servers (one per configuration,
module-scoped, 1 worker). After every test each shared server is checked for
sanitizer reports and dead workers; a server whose master died is restarted
for the next test.
"""

import os
import socket
import threading
import time

import pytest

from conftest import (OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                      RawWS, Server, _tcp_rows, assert_no_sanitizer_reports,
                      base_config, close_payload, connect, encode_frame,
                      http_exchange, make_key, pick_free_port, recv_until_eof,
                      ws_request)


# --------------------------------------------------------------------------
# shared servers
# --------------------------------------------------------------------------

DEFAULT = {}
LIMITS = {"max_message_size": "1k", "max_frame_size": 512, "max_header_size": "1k",
          "handshake_timeout": "1s",
          "allowed_origins": ["https://good.example", "http://localhost:8000"],
          "subprotocols": ["chat.v2", "chat"]}
KEEPALIVE = {"idle_timeout": "1s", "ping_interval": "300ms"}
BACKPRESSURE = {"max_pending_output": "64k", "send_timeout": "1s"}
# Time enough for the client to read its backlog before close_timeout.
BACKPRESSURE_SLOW_CLOSE = {**BACKPRESSURE, "close_timeout": "5s"}
FULL = {"worker_connections": 3}


class Pool:
    def __init__(self, tmp_factory):
        self.tmp_factory = tmp_factory
        self.servers = {}       # config key -> Server
        self.log_seen = {}      # Server -> log length already checked
        self.retired = []

    def get(self, overrides):
        key = repr(sorted(overrides.items()))
        srv = self.servers.get(key)
        if srv is not None and srv.proc.poll() is not None:
            self.retired.append(srv)    # the master died: start a new one
            srv = None
        if srv is None:
            tmp = self.tmp_factory.mktemp("conf")
            port = pick_free_port()
            srv = Server(tmp, port, base_config(tmp, port, workers=1, **overrides))
            srv.start()
            self.servers[key] = srv
            self.log_seen[srv] = 0
        return srv

    def check(self):
        """Sanitizer reports and worker deaths since the last check."""
        problems = []
        for srv in list(self.servers.values()):
            text = srv.log_text()
            new, self.log_seen[srv] = text[self.log_seen[srv]:], len(text)
            for bad in ("killed by signal", "exited with status", "dumped core"):
                if bad in new:
                    problems.append(f"server :{srv.port}: {bad}:\n{new[-3000:]}")
            if srv.proc.poll() is not None:
                problems.append(f"server :{srv.port}: master exited {srv.proc.returncode}")
            assert_no_sanitizer_reports(srv.san_dir)
        assert not problems, "\n".join(problems)

    def stop_all(self):
        for srv in list(self.servers.values()) + self.retired:
            rc = srv.stop()
            assert rc == 0, f"server :{srv.port} stopped with {rc}"
            assert_no_sanitizer_reports(srv.san_dir)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = Pool(tmp_path_factory)
    yield p
    p.stop_all()


@pytest.fixture(autouse=True)
def _pool_check(pool):
    yield
    pool.check()


@pytest.fixture
def srv(pool):
    return pool.get(DEFAULT)


# --------------------------------------------------------------------------
# frame helpers
# --------------------------------------------------------------------------

def frame_enc(opcode, payload=b"", fin=True, enc=None, length=None, mask=True, rsv=0):
    return encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv, enc=enc, length=length)


def expect_close(ws, code, timeout=3.0):
    """The next close frame carries code; nothing follows it and the server
    ends the connection. Returns (reason, data messages before it)."""
    got, reason, msgs = ws.recv_close(timeout)
    assert got == code, f"close code {got}, expected {code} (reason {reason!r})"
    reason.decode("utf-8")
    rest, eof = recv_until_eof(ws.sock, timeout)
    assert ws.buf + rest == b"", f"bytes after the close frame: {(ws.buf + rest)[:100]!r}"
    assert eof, "server did not end the TCP connection after its close frame"
    ws.abort()
    return reason, msgs


def fresh(srv):
    """A connection that has proved it works."""
    ws = RawWS(srv.port)
    assert ws.echo("before") == b"before"
    return ws


# --------------------------------------------------------------------------
# 1002: protocol errors
# --------------------------------------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked-text": encode_frame(OP_TEXT, b"hi", mask=False),
    "unmasked-ping": encode_frame(OP_PING, b"", mask=False),
    "unmasked-close": encode_frame(OP_CLOSE, close_payload(1000), mask=False),
    "rsv1": encode_frame(OP_TEXT, b"hi", rsv=4),
    "rsv2": encode_frame(OP_TEXT, b"hi", rsv=2),
    "rsv3": encode_frame(OP_BIN, b"hi", rsv=1),
    "rsv1-ping": encode_frame(OP_PING, b"p", rsv=4),
    "rsv1-continuation": encode_frame(OP_TEXT, b"a", fin=False) + encode_frame(OP_CONT, b"b", rsv=4),
    **{f"opcode-{op}": encode_frame(op, b"x") for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)},
    "opcode-3-empty-nofin": encode_frame(3, b"", fin=False),
    "ping-126": encode_frame(OP_PING, b"p" * 126),
    "pong-126": encode_frame(OP_PONG, b"p" * 126),
    "close-126": encode_frame(OP_CLOSE, close_payload(1000, b"r" * 124)),
    "ping-65536": frame_enc(OP_PING, b"p" * 65536),
    "ping-nofin": encode_frame(OP_PING, b"p", fin=False),
    "pong-nofin": encode_frame(OP_PONG, b"", fin=False),
    "close-nofin": encode_frame(OP_CLOSE, close_payload(1000), fin=False),
    "continuation-without-start": encode_frame(OP_CONT, b"x"),
    "continuation-nofin-without-start": encode_frame(OP_CONT, b"x", fin=False),
    "continuation-after-complete-message":
        encode_frame(OP_TEXT, b"whole") + encode_frame(OP_CONT, b"more"),
    "text-inside-text": encode_frame(OP_TEXT, b"a", fin=False) + encode_frame(OP_TEXT, b"b"),
    "binary-inside-text": encode_frame(OP_TEXT, b"a", fin=False) + encode_frame(OP_BIN, b"b"),
    "text-inside-binary": encode_frame(OP_BIN, b"a", fin=False) + encode_frame(OP_TEXT, b"b", fin=False),
    "16bit-len-0": frame_enc(OP_TEXT, b"", enc=16),
    "16bit-len-5": frame_enc(OP_TEXT, b"hello", enc=16),
    "16bit-len-125": frame_enc(OP_BIN, b"x" * 125, enc=16),
    "64bit-len-0": frame_enc(OP_TEXT, b"", enc=64),
    "64bit-len-125": frame_enc(OP_BIN, b"x" * 125, enc=64),
    "64bit-len-126": frame_enc(OP_BIN, b"x" * 126, enc=64),
    "64bit-len-65535": frame_enc(OP_BIN, b"x" * 65535, enc=64),
    "64bit-top-bit": frame_enc(OP_BIN, b"", enc=64, length=1 << 63),
    "64bit-all-ones": frame_enc(OP_BIN, b"", enc=64, length=(1 << 64) - 1),
    "16bit-ping-5": frame_enc(OP_PING, b"hello", enc=16),
    "close-1-byte": encode_frame(OP_CLOSE, b"\x03"),
    **{f"close-code-{c}": encode_frame(OP_CLOSE, close_payload(c))
       for c in (0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)},
    "close-code-1005-with-reason": encode_frame(OP_CLOSE, close_payload(1005, b"r")),
}


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_error_1002(srv, data):
    ws = fresh(srv)
    ws.sock.sendall(data)
    expect_close(ws, 1002)


def test_protocol_error_header_trickled_byte_by_byte(srv):
    ws = fresh(srv)
    for b in frame_enc(OP_BIN, b"x" * 200, enc=64)[:14]:
        ws.sock.sendall(bytes([b]))
        time.sleep(0.005)
    expect_close(ws, 1002)


def test_protocol_error_after_pipelined_messages_echoes_them_first(srv):
    ws = RawWS(srv.port)
    ws.sock.sendall(encode_frame(OP_TEXT, b"one") + encode_frame(OP_BIN, b"two") +
                    encode_frame(OP_TEXT, b"bad", mask=False) + encode_frame(OP_TEXT, b"never"))
    _r, msgs = expect_close(ws, 1002)
    # what came before the bad frame may be echoed; what came after must not be
    assert (OP_TEXT, b"never") not in msgs
    assert msgs in ([], [(OP_TEXT, b"one")], [(OP_TEXT, b"one"), (OP_BIN, b"two")])


def test_bytes_after_protocol_error_are_ignored(srv):
    """The server reads (and drops) what the client still sends after the
    error, and ends the connection after its close frame."""
    ws = fresh(srv)
    ws.sock.sendall(encode_frame(5, b"x") + encode_frame(OP_TEXT, b"ignored") * 50)
    expect_close(ws, 1002)


# --------------------------------------------------------------------------
# 1007: invalid UTF-8
# --------------------------------------------------------------------------

BAD_UTF8 = {
    "ff": b"\xff",
    "fe": b"ab\xfe",
    "lone-continuation": b"\x80",
    "overlong-2": b"\xc0\xaf",
    "overlong-3": b"\xe0\x80\xaf",
    "overlong-4": b"\xf0\x80\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "truncated-2": b"ok\xc3",
    "truncated-3": b"ok\xe2\x82",
    "truncated-4": b"ok\xf0\x9d\x84",
    "bad-continuation": b"\xe2\x28\xa1",
}


@pytest.mark.parametrize("payload", BAD_UTF8.values(), ids=BAD_UTF8.keys())
def test_invalid_utf8_text_1007(srv, payload):
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, payload)
    expect_close(ws, 1007)


@pytest.mark.parametrize("payload", [b"ab\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"x\xf4\x90"],
                         ids=["ff", "overlong", "surrogate", "above-10ffff-prefix"])
def test_invalid_utf8_in_first_fragment_fails_at_once(srv, payload):
    """Only the first fragment (FIN=0) is sent: the server must not wait for
    the end of the message to judge it."""
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, payload, fin=False)
    expect_close(ws, 1007, timeout=2.0)


def test_invalid_utf8_in_later_fragment_fails_at_once(srv):
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, "héllo ".encode(), fin=False)
    ws.send_frame(OP_CONT, b"w\xe2\x82", fin=False)  # fine so far: incomplete
    ws.send_frame(OP_CONT, b"\x28", fin=False)       # now invalid
    expect_close(ws, 1007, timeout=2.0)


def test_utf8_truncated_at_message_end_1007(srv):
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, b"a\xe2", fin=False)
    ws.send_frame(OP_CONT, b"\x82", fin=True)
    expect_close(ws, 1007)


def test_invalid_utf8_in_binary_is_fine(srv):
    ws = fresh(srv)
    ws.send_frame(OP_BIN, b"\xff\xfe\xed\xa0\x80")
    assert ws.recv_message() == (OP_BIN, b"\xff\xfe\xed\xa0\x80")
    assert ws.close() == 1000


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"],
                         ids=["ff", "truncated", "surrogate", "overlong"])
def test_invalid_utf8_close_reason_1007(srv, reason):
    ws = fresh(srv)
    ws.send_frame(OP_CLOSE, close_payload(1000, reason))
    expect_close(ws, 1007)


# --------------------------------------------------------------------------
# close handshake
# --------------------------------------------------------------------------

ALLOWED_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", ALLOWED_CODES)
def test_allowed_close_code_echoed(srv, code):
    ws = fresh(srv)
    ws.send_frame(OP_CLOSE, close_payload(code, "bye ünïcødé €𝄞".encode()))
    expect_close(ws, code)


def test_empty_close_gets_empty_close(srv):
    ws = fresh(srv)
    ws.send_frame(OP_CLOSE, b"")
    fin, op, payload = ws.recv_frame()
    assert (fin, op, payload) == (True, OP_CLOSE, b"")
    rest, eof = recv_until_eof(ws.sock, 3.0)
    assert ws.buf + rest == b"" and eof
    ws.abort()


def test_close_with_123_byte_reason(srv):
    ws = fresh(srv)
    ws.send_frame(OP_CLOSE, close_payload(4321, b"r" * 123))
    expect_close(ws, 4321)


def test_echoes_before_close_reply(srv):
    ws = RawWS(srv.port)
    big = os.urandom(300000)
    ws.sock.sendall(b"".join([encode_frame(OP_TEXT, b"one"), encode_frame(OP_BIN, big),
                              encode_frame(OP_TEXT, b"thr", fin=False),
                              encode_frame(OP_CONT, b"ee"),
                              encode_frame(OP_CLOSE, close_payload(3003))]))
    _r, msgs = expect_close(ws, 3003)
    assert msgs == [(OP_TEXT, b"one"), (OP_BIN, big), (OP_TEXT, b"three")]


def test_close_inside_fragmented_message(srv):
    """A close may interleave with fragments; the unfinished message is
    dropped and the close answered."""
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, b"part", fin=False)
    ws.send_frame(OP_CLOSE, close_payload(1000))
    _r, msgs = expect_close(ws, 1000)
    assert msgs == []


def test_nothing_answered_after_close_frame(srv):
    """Frames behind a client's close frame are not processed."""
    ws = fresh(srv)
    ws.sock.sendall(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_TEXT, b"late") +
                    encode_frame(OP_PING, b"late"))
    _r, msgs = expect_close(ws, 1000)
    assert msgs == []


def _server_side_socket(port, client_port):
    """The server's socket for this connection still held by a process?"""
    return any(lport == port and rport == client_port and inode
               for lport, rport, _st, inode in _tcp_rows())


def test_lingering_close_bounded_by_close_timeout(srv):
    """After its close frame the server half-closes, keeps reading what the
    client sends, and drops the connection after close_timeout (1s here)."""
    ws = fresh(srv)
    ws.send_frame(OP_TEXT, b"\xff")
    got, _r, _m = ws.recv_close()
    assert got == 1007
    assert ws.wait_eof(2.0)
    t0 = time.monotonic()
    time.sleep(0.2)
    ws.sock.sendall(b"still talking")          # read and dropped, no RST
    time.sleep(0.1)
    assert _server_side_socket(srv.port, ws.local_port), "dropped before close_timeout"
    while _server_side_socket(srv.port, ws.local_port):
        assert time.monotonic() - t0 < 3.0, "server kept the connection past close_timeout"
        time.sleep(0.05)
    ws.abort()


# --------------------------------------------------------------------------
# pings
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 4, 5, 124, 125])
def test_ping_inside_fragmented_message(srv, n):
    ws = fresh(srv)
    payload = bytes((i * 7 + n) & 0xff for i in range(n))
    ws.send_frame(OP_TEXT, b"frag-", fin=False)
    ws.send_frame(OP_PING, payload)
    assert ws.recv_frame(2.0) == (True, OP_PONG, payload)   # before the message ends
    ws.send_frame(OP_CONT, b"mid-", fin=False)
    ws.send_frame(OP_PING, payload[::-1])
    assert ws.recv_frame(2.0) == (True, OP_PONG, payload[::-1])
    ws.send_frame(OP_CONT, b"end")
    assert ws.recv_message() == (OP_TEXT, b"frag-mid-end")
    assert ws.close() == 1000


def test_pong_inside_fragmented_message_is_ignored(srv):
    ws = fresh(srv)
    ws.send_frame(OP_BIN, b"a", fin=False)
    ws.send_frame(OP_PONG, b"unsolicited")
    ws.send_frame(OP_CONT, b"b")
    assert ws.recv_frame() == (True, OP_BIN, b"ab")
    assert ws.close() == 1000


# --------------------------------------------------------------------------
# fragmentation and lengths
# --------------------------------------------------------------------------

def send_fragments(ws, opcode, parts):
    frames = []
    for i, p in enumerate(parts):
        frames.append(encode_frame(opcode if i == 0 else OP_CONT, p, fin=i == len(parts) - 1))
    ws.sock.sendall(b"".join(frames))


def test_one_byte_frames(srv):
    ws = fresh(srv)
    msg = b"hello, one byte per frame"
    send_fragments(ws, OP_BIN, [msg[i:i + 1] for i in range(len(msg))])
    assert ws.recv_message() == (OP_BIN, msg)
    assert ws.close() == 1000


def test_utf8_split_at_every_byte(srv):
    """2-, 3- and 4-byte characters, one frame per byte: every character is
    split across frames, and the message is echoed intact."""
    text = "aé€𝄞zß中😀\u0080\u07ff\u0800\uffff\U00010000\U0010ffff"
    raw = text.encode()
    ws = fresh(srv)
    send_fragments(ws, OP_TEXT, [raw[i:i + 1] for i in range(len(raw))])
    assert ws.recv_message() == (OP_TEXT, raw)
    # and split at every possible single position
    for cut in range(1, len(raw)):
        send_fragments(ws, OP_TEXT, [raw[:cut], raw[cut:]])
    for cut in range(1, len(raw)):
        assert ws.recv_message() == (OP_TEXT, raw)
    assert ws.close() == 1000


def test_empty_fragments(srv):
    ws = fresh(srv)
    send_fragments(ws, OP_TEXT, [b"", b"", "ü".encode(), b""])
    assert ws.recv_message() == (OP_TEXT, "ü".encode())
    send_fragments(ws, OP_BIN, [b"", b""])
    assert ws.recv_message() == (OP_BIN, b"")
    assert ws.close() == 1000


@pytest.mark.parametrize("n", [0, 125, 126, 127, 1000, 65535, 65536, 65537, 200000])
def test_minimal_lengths_echo(srv, n):
    """7-, 16- and 64-bit lengths at their boundaries, minimal encodings."""
    ws = fresh(srv)
    data = os.urandom(n)
    ws.sock.sendall(frame_enc(OP_BIN, data))
    fin, op, got = ws.recv_frame()
    assert (fin, op) == (True, OP_BIN) and got == data
    assert ws.close() == 1000


def test_64k_frames(srv):
    ws = fresh(srv)
    parts = [os.urandom(65536) for _ in range(4)]
    send_fragments(ws, OP_BIN, parts)
    assert ws.recv_message(10) == (OP_BIN, b"".join(parts))
    parts = [os.urandom(65535) for _ in range(3)]
    send_fragments(ws, OP_BIN, parts)
    assert ws.recv_message(10) == (OP_BIN, b"".join(parts))
    assert ws.close() == 1000


def test_frames_split_across_writes(srv):
    """Headers and payloads cut at every position of a small frame."""
    ws = fresh(srv)
    data = frame_enc(OP_TEXT, "héllo".encode(), enc=7) + frame_enc(OP_BIN, b"y" * 300)
    for cut in range(1, len(data)):
        ws.sock.sendall(data[:cut])
        time.sleep(0.001)
        ws.sock.sendall(data[cut:])
        assert ws.recv_message() == (OP_TEXT, "héllo".encode())
        assert ws.recv_message() == (OP_BIN, b"y" * 300)
    assert ws.close() == 1000


# --------------------------------------------------------------------------
# handshake
# --------------------------------------------------------------------------

def status_of(port, request):
    resp, _eof = http_exchange(port, request)
    return resp


def test_host_required(srv):
    assert status_of(srv.port, ws_request(srv.port, omit=["Host"])).status == 400
    assert status_of(srv.port, ws_request(srv.port, host="")).status == 400


@pytest.mark.parametrize("key", [
    "",                                                   # empty
    "dGhlIHNhbXBsZSBub25jZQ=",                            # 23 chars
    "dGhlIHNhbXBsZSBub25jZQ===",                          # 25 chars
    __import__("base64").b64encode(b"x" * 15).decode(),   # 15 bytes
    __import__("base64").b64encode(b"x" * 17).decode(),   # 17 bytes
    __import__("base64").b64encode(b"x" * 18).decode(),   # 18 bytes, 24 chars
    "dGhlIHNhbXBsZSBub25jZR==",                           # stray bits past 16 bytes
    "dGhlIHNhbXBsZSBub25j!Q==",                           # not base64
    "dGhlIHNhbXBsZSBub2 5jZQ==",                          # space inside
    "dGhlIHNhbXBsZSBub25jZQ=A",                           # bad padding
])
def test_key_must_be_base64_of_16_bytes(srv, key):
    assert status_of(srv.port, ws_request(srv.port, key=key)).status == 400


@pytest.mark.parametrize("upgrade,connection", [
    ("WebSocket", "Upgrade"), ("WEBSOCKET", "UPGRADE"), ("websocket", "keep-alive, Upgrade"),
    ("websocket", "upgrade ,keep-alive"), ("h2c, websocket", "Upgrade"),
    ("websocket", "keep-alive,\tUpgrade\t"),
])
def test_connection_and_upgrade_are_case_insensitive_token_lists(srv, upgrade, connection):
    key = make_key()
    resp = None
    s = connect(srv.port)
    try:
        s.sendall(ws_request(srv.port, key=key, upgrade=upgrade, connection=connection))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        resp = data.split(b"\r\n")[0]
    finally:
        s.close()
    assert resp == b"HTTP/1.1 101 Switching Protocols"


@pytest.mark.parametrize("upgrade,connection", [
    ("websocketx", "Upgrade"), ("web socket", "Upgrade"), ("websocket", "Upgraded"),
    ("websocket", "keep-alive"), ("websocket", "up grade"),
])
def test_connection_and_upgrade_need_the_exact_tokens(srv, upgrade, connection):
    resp = status_of(srv.port, ws_request(srv.port, upgrade=upgrade, connection=connection))
    assert resp.status == 400


@pytest.mark.parametrize("header,value", [
    ("Host", "127.0.0.1"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", None),
    ("Sec-WebSocket-Version", "13"), ("Origin", "http://a.example"),
])
def test_duplicate_headers_400(srv, header, value):
    value = value if value is not None else make_key()
    extra = [(header, value)]
    if header == "Origin":
        extra.append(("Origin", value))
    resp = status_of(srv.port, ws_request(srv.port, extra=extra))
    assert resp.status == 400, resp


# --------------------------------------------------------------------------
# limits (max_message_size 1k, max_frame_size 512, max_header_size 1k)
# --------------------------------------------------------------------------

@pytest.fixture
def limits(pool):
    return pool.get(LIMITS)


def test_message_at_the_limits_echoes(limits):
    ws = fresh(limits)
    ws.send_frame(OP_BIN, b"f" * 512)
    assert ws.recv_message() == (OP_BIN, b"f" * 512)
    send_fragments(ws, OP_BIN, [b"a" * 512, b"b" * 512])
    assert ws.recv_message() == (OP_BIN, b"a" * 512 + b"b" * 512)
    send_fragments(ws, OP_TEXT, [b"t" * 400, b"u" * 400, b"v" * 224])
    assert ws.recv_message() == (OP_TEXT, b"t" * 400 + b"u" * 400 + b"v" * 224)
    assert ws.close() == 1000


@pytest.mark.parametrize("frames", [
    [(OP_BIN, 513, True)],
    [(OP_TEXT, 513, True)],
    [(OP_BIN, 100, False), (OP_CONT, 513, True)],
    [(OP_BIN, 400, False), (OP_CONT, 400, False), (OP_CONT, 400, True)],
    [(OP_TEXT, 512, False), (OP_CONT, 512, False), (OP_CONT, 1, True)],
    [(OP_TEXT, 512, False), (OP_CONT, 512, False), (OP_CONT, 0, False), (OP_CONT, 1, False)],
], ids=["frame-513", "text-frame-513", "second-frame-513", "message-1200",
        "message-1025", "message-1025-unfinished"])
def test_over_the_limits_1009(limits, frames):
    ws = fresh(limits)
    ws.sock.sendall(b"".join(encode_frame(op, b"z" * n, fin=fin) for op, n, fin in frames))
    expect_close(ws, 1009)


def test_huge_frame_header_is_refused_before_its_payload(limits):
    """Only the header of a 1 TiB frame is sent: 1009 at once."""
    ws = fresh(limits)
    ws.sock.sendall(frame_enc(OP_BIN, b"", length=1 << 40)[:14])
    expect_close(ws, 1009, timeout=2.0)


def test_ping_payload_not_counted_in_message(limits):
    ws = fresh(limits)
    ws.send_frame(OP_BIN, b"a" * 512, fin=False)
    for _ in range(10):
        ws.send_frame(OP_PING, b"p" * 125)
        assert ws.recv_frame() == (True, OP_PONG, b"p" * 125)
    ws.send_frame(OP_CONT, b"b" * 512)
    assert ws.recv_message() == (OP_BIN, b"a" * 512 + b"b" * 512)
    assert ws.close() == 1000


def test_max_header_size_431(limits):
    req = ws_request(limits.port, extra=[("X-Pad", "p" * 1100)])
    assert status_of(limits.port, req).status == 431
    # just under the limit is fine
    base = ws_request(limits.port, extra=[("X-Pad", "")])
    req = ws_request(limits.port, extra=[("X-Pad", "p" * (1024 - len(base)))])
    assert len(req) == 1024
    s = connect(limits.port)
    s.sendall(req)
    assert s.recv(12) == b"HTTP/1.1 101"
    s.close()


def test_handshake_timeout_408_other_clients_unaffected(limits):
    slow = connect(limits.port)
    slow.sendall(ws_request(limits.port)[:40])
    t0 = time.monotonic()
    good = fresh(limits)
    while time.monotonic() - t0 < 0.8:
        assert good.echo("still here") == b"still here"
        time.sleep(0.05)
    data, eof = recv_until_eof(slow, 3.0)
    took = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert eof
    assert 0.8 < took < 2.5, took
    assert good.echo("after") == b"after"
    assert good.close() == 1000
    slow.close()


def test_trickled_handshake_still_times_out(limits):
    """Bytes arriving do not extend handshake_timeout (slowloris)."""
    s = connect(limits.port)
    req = ws_request(limits.port)
    t0 = time.monotonic()
    got = b""
    s.settimeout(0.1)
    for b in req[:-1]:
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        try:
            got += s.recv(4096)
        except socket.timeout:
            pass
        if got or time.monotonic() - t0 > 3:
            break
    data, _eof = recv_until_eof(s, 3.0)
    got += data
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert time.monotonic() - t0 < 2.5
    s.close()


@pytest.mark.parametrize("origin,status", [
    (None, 101), ("https://good.example", 101), ("http://localhost:8000", 101),
    ("https://evil.example", 403), ("HTTPS://GOOD.EXAMPLE", 403),
    ("https://good.example.evil", 403), ("https://good.example/", 403), ("null", 403),
    ("", 403),
])
def test_allowed_origins(limits, origin, status):
    extra = [] if origin is None else [("Origin", origin)]
    s = connect(limits.port)
    s.sendall(ws_request(limits.port, extra=extra))
    data, _ = recv_until_eof(s, 0.5) if status == 101 else recv_until_eof(s, 3.0)
    s.close()
    assert data.startswith(f"HTTP/1.1 {status} ".encode()), data


@pytest.mark.parametrize("offer,chosen", [
    (None, None), ("chat", "chat"), ("chat.v2", "chat.v2"), ("foo, chat", "chat"),
    ("chat, chat.v2", "chat"), ("chat.v2, chat", "chat.v2"), ("foo, bar", None),
    ("CHAT", None), ("chat.v3", None), (" foo ,  chat.v2 ", "chat.v2"),
])
def test_subprotocol_selection(limits, offer, chosen):
    extra = [] if offer is None else [("Sec-WebSocket-Protocol", offer)]
    ws = RawWS(limits.port, request=ws_request(limits.port, extra=extra))
    assert ws.response.header("sec-websocket-protocol") == chosen
    assert len(ws.response.headers.get("sec-websocket-protocol", [])) <= 1
    assert ws.echo("proto") == b"proto"
    assert ws.close() == 1000


def test_subprotocols_default_none(srv):
    extra = [("Sec-WebSocket-Protocol", "chat")]
    ws = RawWS(srv.port, request=ws_request(srv.port, extra=extra))
    assert ws.response.header("sec-websocket-protocol") is None
    assert ws.close() == 1000


def test_any_origin_by_default(srv):
    ws = RawWS(srv.port, request=ws_request(srv.port, extra=[("Origin", "https://x.example")]))
    assert ws.close() == 1000


def test_worker_connections_503(pool):
    full = pool.get(FULL)
    held = [RawWS(full.port) for _ in range(3)]
    resp = status_of(full.port, ws_request(full.port))
    assert resp.status == 503
    for ws in held:
        assert ws.echo("held") == b"held"
    held.pop().close()
    time.sleep(0.2)
    ws = RawWS(full.port)
    assert ws.echo("again") == b"again"
    for ws in held + [ws]:
        ws.close()


# --------------------------------------------------------------------------
# keepalive (idle_timeout 1s, ping_interval 300ms)
# --------------------------------------------------------------------------

@pytest.fixture
def keepalive(pool):
    return pool.get(KEEPALIVE)


def test_silent_client_gets_ping_then_idle_close(keepalive):
    ws = RawWS(keepalive.port)
    t0 = time.monotonic()
    fin, op, payload = ws.recv_frame(3.0)
    t_ping = time.monotonic() - t0
    assert op == OP_PING, (op, payload)
    assert 0.2 < t_ping < 0.9, t_ping
    got, reason, msgs = ws.recv_close(3.0)
    t_close = time.monotonic() - t0
    assert (got, reason, msgs) == (1001, b"idle timeout", [])
    assert 0.85 < t_close < 2.0, t_close
    ws.sock.sendall(encode_frame(OP_CLOSE, close_payload(1001)))
    rest, eof = recv_until_eof(ws.sock, 3.0)
    assert ws.buf + rest == b"" and eof
    ws.abort()


def test_pongs_keep_the_connection_open(keepalive):
    ws = RawWS(keepalive.port)
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 2.5:
        fin, op, payload = ws.recv_frame(2.0)
        assert op == OP_PING, (op, payload)
        pings += 1
        ws.send_frame(OP_PONG, payload)
    assert pings >= 4
    assert ws.echo("alive") == b"alive"
    assert ws.close() == 1000


def test_any_frame_resets_the_clock(keepalive):
    """Unsolicited pongs or data every 150 ms: no ping, no close."""
    ws = RawWS(keepalive.port)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.0:
        if i % 2:
            ws.send_frame(OP_PONG, b"tick")
        else:
            ws.send_frame(OP_TEXT, b"tock")
            assert ws.recv_frame(1.0) == (True, OP_TEXT, b"tock")
        i += 1
        time.sleep(0.15)
    ws.sock.settimeout(0.05)
    try:
        extra = ws.sock.recv(100)
    except socket.timeout:
        extra = b""
    assert extra == b"", f"server sent {extra!r} to a busy client"
    assert ws.close() == 1000


# --------------------------------------------------------------------------
# backpressure (max_pending_output 64k, send_timeout 1s)
# --------------------------------------------------------------------------

@pytest.fixture
def backpressure(pool):
    return pool.get(BACKPRESSURE)


def _server_rx_queue(port, client_port):
    """Bytes from the client waiting unread in the server's socket."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if (int(p[1].rsplit(":", 1)[1], 16) == port and
                    int(p[2].rsplit(":", 1)[1], 16) == client_port):
                return int(p[4].split(":")[1], 16)
    return None


def test_client_not_reading_is_stalled_then_closed_1008(pool):
    # close_timeout 5s: time to read the backlog after the 1008, on a busy machine
    backpressure = pool.get(BACKPRESSURE_SLOW_CLOSE)
    ws = RawWS(backpressure.port)
    msg = encode_frame(OP_BIN, b"m" * 65536)
    total = 80                                  # 5 MiB
    sent = [0]
    sock2 = socket.socket(fileno=os.dup(ws.sock.fileno()))  # its own timeout
    sock2.settimeout(10)

    def sender():
        try:
            for _ in range(total):
                sock2.sendall(msg)
                sent[0] += 1
        except OSError:
            pass
    th = threading.Thread(target=sender, daemon=True)
    t0 = time.monotonic()
    th.start()
    good = fresh(backpressure)                  # the worker serves others meanwhile
    time.sleep(0.35)
    assert good.echo("unaffected") == b"unaffected"
    # the server has stopped reading this client: its bytes wait in the
    # kernel, the queue neither drains nor (once the sender is blocked)
    # grows. Its close frame cannot leave while we do not read, so it does
    # not read again before we do.
    assert wait_stalled(backpressure.port, ws.local_port, timeout=5.0) > 0
    time.sleep(1.2)                             # past send_timeout (1s) from the stall
    got, reason, msgs = ws.recv_close(5.0)
    assert (got, reason) == (1008, b"not reading")
    assert all(p == b"m" * 65536 for _op, p in msgs)
    # the server will not read our reply (it stopped reading us): it drops
    # the connection close_timeout (5s) after its close frame
    rest, eof = recv_until_eof(ws.sock, 8.0)
    assert ws.buf + rest == b"" and eof
    assert time.monotonic() - t0 < 15.0
    th.join(5)
    sock2.close()
    ws.abort()
    assert good.echo("still") == b"still"
    assert good.close() == 1000


def test_slow_reader_catches_up_without_loss(backpressure):
    """Stalled below send_timeout, then reading: nothing lost or closed."""
    ws = RawWS(backpressure.port)
    msgs = [os.urandom(32768) for _ in range(40)]
    sock2 = socket.socket(fileno=os.dup(ws.sock.fileno()))
    sock2.settimeout(10)
    th = threading.Thread(target=lambda: sock2.sendall(
        b"".join(encode_frame(OP_BIN, m) for m in msgs)), daemon=True)
    th.start()
    time.sleep(0.5)
    for m in msgs:
        assert ws.recv_message(5.0) == (OP_BIN, m)
    th.join(5)
    sock2.close()
    assert ws.close() == 1000


def test_reading_after_close_frame_is_bounded(pool):
    """Once a stalled client got 1008, the server reads nothing until its
    close frame is out, then at most 1 MiB while it waits for the client's
    close, and it never stops serving others to do so."""
    backpressure = pool.get(BACKPRESSURE_SLOW_CLOSE)
    ws = RawWS(backpressure.port)
    msg = encode_frame(OP_BIN, b"m" * 65536)
    sent, stop = [0], [False]
    sock2 = socket.socket(fileno=os.dup(ws.sock.fileno()))
    sock2.settimeout(10)

    def sender():
        try:
            while not stop[0]:
                sock2.sendall(msg)
                sent[0] += len(msg)
        except OSError:
            pass
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    time.sleep(1.2)                             # stalled past send_timeout (1s)
    good = fresh(backpressure)
    assert good.echo("unaffected") == b"unaffected"
    got, reason, _m = ws.recv_close(5.0)        # now we read: echoes, then 1008
    assert (got, reason) == (1008, b"not reading")
    at_close = sent[0]
    time.sleep(0.8)                             # < close_timeout (5s)
    after = sent[0] - at_close
    stop[0] = True
    th.join(5)
    sock2.close()
    ws.abort()
    # kernel buffers on loopback can hold a few MiB; the server should not
    # be draining the client at full speed
    assert after < 64 << 20, f"{after >> 20} MiB taken from the client after the close frame"


# --------------------------------------------------------------------------
# the fast path: whole one-frame messages skip wslay and go through a 64 KiB
# per-worker read buffer; everything else falls back to wslay mid-run
# --------------------------------------------------------------------------

SCRATCH = 65536
BIG_HEADERS = {"max_header_size": "1m"}


def test_invalid_utf8_after_pipelined_good_frames_1007(srv):
    """Good one-frame texts are echoed, the bad one (checked after unmasking
    in place) is handed to wslay with its bytes intact: 1007, nothing after."""
    ws = RawWS(srv.port)
    good = [("ok %d é" % i).encode() for i in range(20)]
    bad = b"x" * 20000 + b"\xed\xa0\x80" + b"y" * 100
    ws.sock.sendall(b"".join(encode_frame(OP_TEXT, g) for g in good) +
                    encode_frame(OP_TEXT, bad) + encode_frame(OP_TEXT, b"never"))
    _r, msgs = expect_close(ws, 1007)
    assert msgs == [(OP_TEXT, g) for g in good]


def test_pipelined_frames_mixed_with_control_frames_keep_order(srv):
    """One write of data frames (small, 16 KiB, bigger than the read buffer),
    pings and fragmented messages: every echo in order, every ping answered
    with its payload, pongs in order (they may overtake echoes)."""
    ws = RawWS(srv.port)
    wire, want, pings = [], [], []
    for i in range(400):
        kind = i % 7
        if kind == 3:
            p = b"ping%d" % i
            wire.append(encode_frame(OP_PING, p))
            pings.append(p)
            continue
        if kind == 5:
            parts = [b"frag%d-" % i, b"a" * 300, "ü".encode()]
            wire += [encode_frame(OP_TEXT if j == 0 else OP_CONT, p, fin=j == 2)
                     for j, p in enumerate(parts)]
            want.append((OP_TEXT, b"".join(parts)))
            continue
        size = {0: 20, 1: 16384, 2: 125, 4: 70000 if i % 3 == 0 else 65000, 6: 0}[kind]
        data = (b"%d:" % i + os.urandom(size))[:max(size, 1)]
        wire.append(encode_frame(OP_BIN, data))
        want.append((OP_BIN, data))
    wire.append(encode_frame(OP_CLOSE, close_payload(1000)))
    sender = threading.Thread(target=ws.sock.sendall, args=(b"".join(wire),), daemon=True)
    sender.start()
    got, pongs = [], []
    deadline = time.monotonic() + 30
    while True:
        fin, op, payload = ws.recv_frame(max(0.01, deadline - time.monotonic()))
        assert fin
        if op == OP_CLOSE:
            break
        (pongs if op == OP_PONG else got).append(payload if op == OP_PONG else (op, payload))
    sender.join(10)
    assert pongs == pings
    assert len(got) == len(want)
    assert got == want
    ws.abort()


@pytest.mark.parametrize("size", [16384, 16385, 40000])
def test_big_frame_trickled_across_many_writes(srv, size):
    """A frame that fits the read buffer but arrives in pieces: what each
    wake-up leaves is kept until the rest comes."""
    ws = fresh(srv)
    data = os.urandom(size // 2).hex().encode()[:size]
    frame = encode_frame(OP_TEXT, data) + encode_frame(OP_BIN, b"next")
    step = len(frame) // 60 + 1
    for off in range(0, len(frame), step):
        ws.sock.sendall(frame[off:off + step])
        time.sleep(0.002)
    assert ws.recv_message(10) == (OP_TEXT, data)
    assert ws.recv_message() == (OP_BIN, b"next")
    assert ws.close() == 1000


@pytest.mark.parametrize("size", [SCRATCH - 9, SCRATCH - 8, SCRATCH - 7, SCRATCH - 1, SCRATCH,
                                  SCRATCH + 1, 3 * SCRATCH])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_messages_around_the_read_buffer_size(srv, size, split):
    """Frames of 65,535, 65,536 (the buffer, exactly) and 65,537 bytes and
    larger, alone and between small frames, whole or cut in two writes."""
    ws = fresh(srv)
    big = os.urandom(size)
    wire = encode_frame(OP_BIN, b"a") + encode_frame(OP_BIN, big) + encode_frame(OP_TEXT, b"z")
    cut = len(wire) // 2 if split else len(wire)
    ws.sock.sendall(wire[:cut])
    time.sleep(0.01)
    ws.sock.sendall(wire[cut:])
    assert ws.recv_message() == (OP_BIN, b"a")
    assert ws.recv_message(10) == (OP_BIN, big)
    assert ws.recv_message() == (OP_TEXT, b"z")
    assert ws.close() == 1000


@pytest.fixture
def big_headers(pool):
    return pool.get(BIG_HEADERS)


@pytest.mark.parametrize("pad", [1000, 40000, 70000])
def test_big_handshake_leftovers(big_headers, pad):
    """Frames sent right behind a large request arrive in the request buffer
    (with http_parser's 80 KiB header limit, just under 64 KiB of them at
    most) and become the connection's first stash; frames bigger than the
    read buffer follow. All are echoed in order, then the close answered."""
    frames = [os.urandom(n) for n in (10, 30000, 70000, 5, 200000, 16384) * 3]
    wire = b"".join(encode_frame(OP_BIN, f) for f in frames)
    wire += encode_frame(OP_PING, b"p") + encode_frame(OP_CLOSE, close_payload(4000))
    key = make_key()
    req = ws_request(big_headers.port, key=key, extra=[("X-Pad", "p" * pad)])
    ws = RawWS(big_headers.port, request=req, trailing=wire, timeout=10.0)
    _r, msgs = expect_close(ws, 4000, timeout=10.0)
    assert msgs == [(OP_BIN, f) for f in frames]


@pytest.mark.parametrize("size", [16384, 65536], ids=["16k-fast-path", "64k-wslay"])
def test_non_reader_stalls_whatever_the_path(pool, size):
    """Echoes written straight into the write buffer and those queued by
    wslay count alike: a client that sends without reading stops being read
    (its bytes wait in the kernel), then gets 1008."""
    # close_timeout long enough to read megabytes of echoes before the close.
    backpressure = pool.get(BACKPRESSURE_SLOW_CLOSE)
    ws = RawWS(backpressure.port)
    msg = encode_frame(OP_BIN, b"m" * size)
    sock2 = socket.socket(fileno=os.dup(ws.sock.fileno()))
    sock2.settimeout(10)

    def sender():
        try:
            for _ in range((8 << 20) // size):
                sock2.sendall(msg)
        except OSError:
            pass
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    assert wait_stalled(backpressure.port, ws.local_port) > 0
    time.sleep(1.2)                             # past send_timeout, still not reading
    got, reason, msgs = ws.recv_close(5.0)
    assert (got, reason) == (1008, b"not reading")
    assert all(p == b"m" * size for _op, p in msgs)
    th.join(10)
    sock2.close()
    ws.abort()


def wait_stalled(port, client_port, timeout=3.0):
    """The server's receive queue for this client is non-empty and unchanged
    over 200 ms: it has stopped reading. Returns the queued bytes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rx = _server_rx_queue(port, client_port)
        if rx and rx == last:
            return rx
        last = rx
        time.sleep(0.2)
    raise AssertionError(f"server kept reading a client that does not read ({last})")
