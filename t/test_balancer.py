"""Behind a load balancer: PROXY protocol v1 and v2 listeners (valid,
malformed, truncated, late, from an untrusted peer, LOCAL, before TLS,
through a reload), unix-domain listeners (mode and owner, reload, binary
upgrade, stale and foreign files, removal at exit), per-client limits
shared by every worker (503 and 429 with Retry-After, IPv6 prefixes, exact
after a handoff and after a worker is SIGKILLed), and a real HAProxy in
front of two instances: a drain moves its clients to the other with no
failed handshake, a reload and a binary upgrade of that one disconnect
nobody. Only 127.0.0.1, ::1 and unix sockets; every process is stopped by
its pid."""

import asyncio
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
import websockets

import conftest
from conftest import (HttpResponse, RawWS, Server, assert_no_sanitizer_reports, base_config,
                      children, established_inodes, http_exchange, make_key, pick_free_port,
                      pid_alive, recv_until_eof, run_async, run_cli, wait_until, write_config,
                      ws_request)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
HAPROXY = shutil.which("haproxy")


# ------------------------------------------------------------------ helpers

def pp_v1(src, sport, dst="10.0.0.1", dport=443):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def pp_v2(src=None, sport=0, dst=None, dport=443, tlvs=b"", local=False):
    if local:
        return V2_SIG + b"\x20\x00" + struct.pack("!H", 0)
    if ":" in src:
        dst = dst or "::1"
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    else:
        dst = dst or "10.0.0.1"
        body = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11
    body += struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def proxied(port, header, host="127.0.0.1", path="/"):
    """A WebSocket whose first bytes are header, then the upgrade request."""
    key = make_key()
    ws = RawWS(port, host=host, request=header + ws_request(port, path=path, key=key))
    assert ws.response.header("sec-websocket-accept") == conftest.accept_for(key)
    return ws


def raw_answer(port, data, host="127.0.0.1", timeout=3.0, half_close=False):
    """Sends data, returns (bytes received, saw EOF or reset)."""
    s = conftest.connect(port, host=host)
    try:
        if data:
            s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        return recv_until_eof(s, timeout)
    finally:
        s.close()


def metrics(sport):
    """{(name, frozenset(labels)): value} from a status listener's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    r = http_exchange(sport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(sport, name, **labels):
    return metrics(sport).get((name, frozenset(labels.items())), 0.0)


def access_lines(srv):
    path = Path(srv.cfg["access_log"])
    return path.read_text().splitlines() if path.exists() else []


def wait_access(srv, *needles, timeout=5):
    return wait_until(lambda: [l for l in access_lines(srv) if all(n in l for n in needles)],
                      timeout, what=f"access log line with {needles}")


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.fixture
def lb_server(server_factory):
    """A server whose first listener is plain (the readiness probe's) and
    whose second is a PROXY protocol one trusted from 127.0.0.0/8 and ::1,
    with a status listener and an access log."""
    def make(workers=2, extra_listen=(), pfrom=("127.0.0.0/8", "::1/128"), **kw):
        srv = server_factory(workers=workers, start=False, **kw)
        srv.pport, srv.sport = pick_free_port(), pick_free_port()
        srv.cfg["listen"] = [f"127.0.0.1:{srv.port}",
                             {"address": f"127.0.0.1:{srv.pport}", "proxy_protocol": "on",
                              "proxy_protocol_from": list(pfrom)}, *extra_listen]
        srv.cfg["status"] = {"listen": f"127.0.0.1:{srv.sport}"}
        srv.cfg.setdefault("access_log", str(srv.tmp / "access.log"))
        srv.write_config(srv.cfg)
        srv.start()
        return srv
    return make


# ------------------------------------------------------------ PROXY protocol

def test_proxy_v1_and_v2_name_the_client_in_logs_and_access_log(lb_server):
    srv = lb_server(workers=2)
    ws = proxied(srv.pport, pp_v1("203.0.113.7", 5555))
    assert ws.echo("v1") == b"v1"
    ws.close()
    ws = proxied(srv.pport, pp_v2("2001:db8::5", 6666, tlvs=b"\x01\x00\x02h2\x04\x00\x00"))
    assert ws.echo("v2") == b"v2"
    ws.close()
    # the header split byte by byte, then the request: the same header
    s = conftest.connect(srv.pport)
    for b in pp_v2("198.51.100.3", 7777):
        s.sendall(bytes([b]))
        time.sleep(0.002)
    s.sendall(ws_request(srv.pport, path="/nope"))
    data, _ = recv_until_eof(s)
    s.close()
    assert HttpResponse(data).status == 404
    wait_access(srv, 'event="ws"', 'client="203.0.113.7:5555"')
    wait_access(srv, 'event="ws"', 'client="[2001:db8::5]:6666"')
    wait_access(srv, 'event="refused"', 'client="198.51.100.3:7777"', "status=404")
    srv.wait_log("handshake from 198.51.100.3:7777 refused: 404")
    # LOCAL (a balancer's health check): the connection's own address
    ws = proxied(srv.pport, pp_v2(local=True))
    port = ws.local_port
    assert ws.echo("local") == b"local"
    ws.close()
    wait_access(srv, 'event="ws"', f'client="127.0.0.1:{port}"')
    assert metric(srv.sport, "wsechod_proxy_protocol_errors_total", reason="invalid") == 0


def test_proxy_protocol_before_tls(server_factory, tmp_path):
    pem, key = tmp_path / "c.pem", tmp_path / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(pem), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    srv = server_factory(workers=1, start=False, access_log=str(tmp_path / "access.log"))
    tport = pick_free_port()
    srv.cfg["listen"].append({"address": f"127.0.0.1:{tport}", "proxy_protocol": "on",
                              "proxy_protocol_from": ["127.0.0.1/32"],
                              "tls": {"certificate": str(pem), "key": str(key)}})
    srv.write_config(srv.cfg)
    srv.start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = conftest.connect(tport)
    raw.sendall(pp_v1("192.0.2.44", 4444))  # plaintext, before the ClientHello
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    k = make_key()
    tls.sendall(ws_request(tport, key=k))
    head = b""
    while b"\r\n\r\n" not in head:
        head += tls.recv(4096)
    assert HttpResponse(head).status == 101
    tls.sendall(conftest.encode_frame(conftest.OP_CLOSE, conftest.close_payload(1000)))
    tls.recv(64)
    tls.close()
    wait_access(srv, 'event="ws"', 'client="192.0.2.44:4444"')


@pytest.mark.parametrize("name,data,half_close,reason", [
    ("http instead", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, "invalid"),
    ("bad v1", b"PROXY TCP4 1.2.3.04 1.2.3.4 1 2\r\n", False, "invalid"),
    ("bad v2 family", V2_SIG + b"\x21\x41\x00\x0c" + bytes(12), False, "invalid"),
    ("v1 cut", b"PROXY TCP4 1.2.3.4 ", True, "truncated"),
    ("v2 cut", pp_v2("192.0.2.1", 1)[:20], True, "truncated"),
])
def test_malformed_or_truncated_header_is_closed_counted_and_logged(lb_server, name, data,
                                                                     half_close, reason):
    srv = lb_server(workers=1)
    got, eof = raw_answer(srv.pport, data, half_close=half_close)
    assert eof and got == b"", (name, got)  # no HTTP: closed before any
    wait_until(lambda: metric(srv.sport, "wsechod_proxy_protocol_errors_total",
                              reason=reason) == 1, 5, what=f"{reason} counted")
    line = srv.wait_log("PROXY protocol from 127.0.0.1:")
    assert "[info]" in line and f"on 127.0.0.1:{srv.pport}" in line, line
    # a plain connect-and-leave (a TCP check) is no error
    before = metric(srv.sport, "wsechod_proxy_protocol_errors_total", reason="truncated")
    raw_answer(srv.pport, b"", half_close=True)
    time.sleep(0.2)
    assert metric(srv.sport, "wsechod_proxy_protocol_errors_total",
                  reason="truncated") == before
    assert proxied(srv.pport, pp_v1("192.0.2.9", 9)).echo("still") == b"still"


def test_missing_header_times_out(lb_server):
    srv = lb_server(workers=1, handshake_timeout="400ms")
    t0 = time.monotonic()
    got, eof = raw_answer(srv.pport, b"", timeout=5)
    took = time.monotonic() - t0
    assert eof and got == b"" and 0.3 < took < 3, (got, took)
    wait_until(lambda: metric(srv.sport, "wsechod_proxy_protocol_errors_total",
                              reason="timeout") == 1, 5, what="timeout counted")
    srv.wait_log("no complete header within handshake_timeout")


def test_untrusted_peer_is_refused_at_accept(lb_server):
    srv = lb_server(workers=1, pfrom=("10.0.0.0/8", "::1/128"))
    got, eof = raw_answer(srv.pport, pp_v1("203.0.113.1", 1) + ws_request(srv.pport))
    assert eof and got == b""
    wait_until(lambda: metric(srv.sport, "wsechod_proxy_protocol_errors_total",
                              reason="untrusted") == 1, 5, what="untrusted counted")
    line = srv.wait_log("refused: not in its proxy_protocol_from")
    assert "127.0.0.1:" in line and "[info]" in line
    assert "203.0.113.1" not in srv.log_text()  # the header of an untrusted peer is never read


def test_proxy_client_survives_a_reload_handoff_with_its_address(lb_server):
    srv = lb_server(workers=1, reload_handoff=None)
    ws = proxied(srv.pport, pp_v2("203.0.113.99", 4242))
    assert ws.echo("before") == b"before"
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready")
    wait_until(lambda: "handing 1 connections" in srv.log_text(), 10, what="handoff")
    time.sleep(0.3)
    assert ws.echo("after") == b"after"
    ws.close()
    line = wait_access(srv, 'event="ws"', 'client="203.0.113.99:4242"')[0]
    assert "handoffs=1" in line, line


# ---------------------------------------------------------------- unix sockets

class UnixWS(RawWS):
    """RawWS over a unix socket (pre: bytes sent before the request)."""

    def __init__(self, path, pre=b"", timeout=5.0):
        self.key = make_key()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.sock.sendall(pre + ws_request(0, key=self.key, host="localhost"))
        self.response = HttpResponse(self._read_until(b"\r\n\r\n", timeout))
        assert self.response.status == 101, self.response
        assert self.response.header("sec-websocket-accept") == conftest.accept_for(self.key)


def test_unix_listener_mode_owner_reload_upgrade_and_removal(server_factory, tmp_path):
    path, ppath = tmp_path / "ws.sock", tmp_path / "pp.sock"
    path.symlink_to("/nonexistent")  # not a socket: never removed, the start fails
    srv = server_factory(workers=2, start=False, reload_handoff=None,
                         access_log=str(tmp_path / "access.log"))
    unix = {"address": f"unix:{path}", "mode": "0640", "owner": "nobody:nogroup"}
    srv.cfg["listen"] += [unix, {"address": f"unix:{ppath}", "proxy_protocol": "on"}]
    srv.write_config(srv.cfg)
    srv.start(wait=False)
    assert srv.wait_exit(10) == 1
    assert "is not a socket" in srv.stderr_text() and path.is_symlink()
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)  # a socket file nothing accepts on: removed
    stale.bind(str(path))
    stale.close()
    srv.kill_leftovers()
    srv.start()
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and st.st_gid == grp.getgrnam("nogroup").gr_gid
    ws = UnixWS(path)
    assert ws.echo("over unix") == b"over unix"
    pws = UnixWS(ppath, pre=pp_v1("192.0.2.80", 8080))
    assert pws.echo("proxied over unix") == b"proxied over unix"
    pws.close()
    wait_access(srv, 'client="192.0.2.80:8080"')
    # reload: the same socket (inode), the mode changed, the WebSocket moved
    unix["mode"] = "0660"
    srv.write_config(srv.cfg)
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready")
    assert os.lstat(path).st_ino == st.st_ino
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    wait_until(lambda: "handing 1 connections" in srv.log_text(), 10, what="handoff")
    assert ws.echo("after reload") == b"after reload"
    assert UnixWS(path).echo("new after reload") == b"new after reload"
    # binary upgrade: inherited, not removed, still the same socket
    old = srv.pid
    srv.send_signal(signal.SIGUSR2)
    new = wait_until(lambda: (lambda p: p if p and p != old else None)(
        int(srv.pid_file.read_text().strip() or 0) if srv.pid_file.exists() else None),
        15, what="the new master")
    try:
        assert srv.wait_exit(15) == 0
        assert os.lstat(path).st_ino == st.st_ino
        assert ws.echo("after upgrade") == b"after upgrade"
        c = UnixWS(path)
        assert c.echo("new master") == b"new master"
        c.close()
        ws.close()
        wait_access(srv, 'client="unix"', "handoffs=2")
    finally:
        kids = children(new)
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not pid_alive(new) and not any(pid_alive(k) for k in kids), 15,
                   what="new master gone")
    assert not path.exists() and not ppath.exists(), "the files go at the final exit"


def test_unix_listener_config_errors(tmp_path, san_dir):
    for listen, msg in [
        (["unix:relative.sock"], "needs an absolute path"),
        ([{"address": f"unix:{tmp_path}/a.sock", "mode": "0999"}], "mode: expected octal"),
        ([{"address": "127.0.0.1:1", "mode": "0600"}], "mode: only for unix"),
        ([{"address": f"unix:{tmp_path}/a.sock", "owner": "no-such-user-x"}], "unknown user"),
        ([{"address": f"unix:{tmp_path}/a.sock", "proxy_protocol": "on",
           "proxy_protocol_from": ["::1"]}], "not for unix"),
        ([{"address": "127.0.0.1:1", "proxy_protocol": "on"}], "needs proxy_protocol_from"),
        ([{"address": "127.0.0.1:1", "proxy_protocol_from": ["10.0.0.0/8"]}],
         "needs proxy_protocol: on"),
        ([{"address": "127.0.0.1:1", "proxy_protocol": "on",
           "proxy_protocol_from": ["10.0.0.1/8"]}], "bits set past its prefix"),
        ([{"address": "127.0.0.1:1", "proxy_protocol": "maybe"}], "expected 'on' or 'off'"),
    ]:
        r = run_cli(["-t", "-c", write_config(tmp_path / "c.yaml", {"listen": listen})], san_dir)
        assert r.returncode == 1 and msg in r.stderr, (listen, r.stderr)
        assert re.match(r".*c\.yaml:\d+:\d+: ", r.stderr), r.stderr
    for cfg, msg in [({"max_connections_per_ip": -1}, "max_connections_per_ip: expected"),
                     ({"handshake_rate_per_ip": "20/day"}, "expected a rate"),
                     ({"handshake_rate_per_ip": {"rate": "20/s", "bursts": 3}}, "unknown key"),
                     ({"handshake_rate_per_ip": {"rate": "20/s", "burst": 0}}, "out of range"),
                     ({"per_ip_table_size": 10}, "out of range"),
                     ({"per_ip_ipv6_prefix": 129}, "out of range")]:
        r = run_cli(["-t", "-c", write_config(tmp_path / "c.yaml", cfg)], san_dir)
        assert r.returncode == 1 and msg in r.stderr, (cfg, r.stderr)
        assert re.match(r".*c\.yaml:\d+:\d+: ", r.stderr), r.stderr


# ------------------------------------------------------------ per-IP limits

def refused(port, header=b"", host="127.0.0.1"):
    """The response to an upgrade request after header: its head (and body
    when it is an error, read to the server's FIN)."""
    s = conftest.connect(port, host=host)
    try:
        s.sendall(header + ws_request(port))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        r = HttpResponse(data)
        if r.status != 101:
            rest, _ = recv_until_eof(s, 3)
            r = HttpResponse(data + rest)
        return r
    finally:
        s.close()


def owners_on(srv, port, conns):
    """{client port: worker pid} of connections to port."""
    def find():
        est = established_inodes(port)
        fds = {pid: conftest.socket_inodes(pid) for pid in children(srv.pid)}
        out = {}
        for c in conns:
            owner = [pid for pid, inodes in fds.items() if est.get(c.local_port) in inodes]
            if len(owner) != 1:
                return None
            out[c.local_port] = owner[0]
        return out
    return wait_until(find, 5, what="owners of the connections")


def spread_over_workers(srv, port, header, n):
    """n WebSockets from one client, held by both workers (dialled again
    until they are)."""
    for _ in range(20):
        conns = [proxied(port, header) for _ in range(n)]
        owners = owners_on(srv, port, conns)
        if len(set(owners.values())) == 2:
            return conns, owners
        for c in conns:
            c.close()
        time.sleep(0.1)
    raise AssertionError("connections never landed on both workers")


def test_connection_limit_is_shared_by_workers_and_exact_after_sigkill(lb_server):
    srv = lb_server(workers=2, max_connections_per_ip=4)
    hdr = pp_v1("198.51.100.20", 1000)
    conns, owners = spread_over_workers(srv, srv.pport, hdr, 4)
    r = refused(srv.pport, hdr)
    assert r.status == 503 and r.header("retry-after") == "5", r
    assert b"too many connections from this address" in r.body
    other = proxied(srv.pport, pp_v1("198.51.100.21", 1000))  # another client is not limited
    other.close()
    wait_access(srv, 'event="refused"', 'client="198.51.100.20:1000"', "status=503")
    m = metrics(srv.sport)
    assert m[("wsechod_per_ip_refused_total", frozenset({("limit", "connections")}))] == 1
    assert m[("wsechod_handshakes_total", frozenset({("status", "503")}))] == 1
    conns[0].close()
    time.sleep(0.2)
    again = proxied(srv.pport, hdr)  # a close gives its place back
    assert refused(srv.pport, hdr).status == 503
    # a worker SIGKILLed with some of them: the master releases its counts
    live = conns[1:] + [again]
    owners = owners_on(srv, srv.pport, live)
    victim = max(set(owners.values()), key=list(owners.values()).count)
    held = list(owners.values()).count(victim)
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(f"worker {victim} was counted for {held} connections in the per-IP table")
    srv.wait_workers(2)
    fresh = [proxied(srv.pport, hdr) for _ in range(held)]
    assert refused(srv.pport, hdr).status == 503, "exactly the dead worker's count came back"
    for c in fresh + [c for c in live if owners[c.local_port] != victim]:
        c.close()


def test_handshake_rate_429_with_retry_after(lb_server):
    srv = lb_server(workers=2, handshake_rate_per_ip={"rate": "5/s", "burst": 5})
    hdr = pp_v1("198.51.100.30", 1)
    statuses = []
    for _ in range(6):
        statuses.append(refused(srv.pport, hdr).status)  # fresh connections, both workers
    assert statuses[:5] == [101] * 5 and statuses[5] == 429, statuses
    r = refused(srv.pport, hdr)
    assert r.status == 429 and r.header("retry-after") == "1", r
    time.sleep(0.25)
    assert refused(srv.pport, hdr).status == 101  # a token is back
    assert refused(srv.pport, pp_v1("198.51.100.31", 1)).status == 101
    wait_access(srv, 'event="refused"', 'client="198.51.100.30:1"', "status=429")
    assert metric(srv.sport, "wsechod_per_ip_refused_total", limit="rate") == 2
    assert metric(srv.sport, "wsechod_handshakes_total", status="429") == 2
    # a balancer's LOCAL health checks are never limited
    for _ in range(8):
        assert refused(srv.pport, pp_v2(local=True)).status == 101


def test_ipv6_clients_are_grouped_by_prefix(lb_server):
    srv = lb_server(workers=2, max_connections_per_ip=2, per_ip_ipv6_prefix=64)
    a = proxied(srv.pport, pp_v2("2001:db8:1:2::1", 1))
    b = proxied(srv.pport, pp_v2("2001:db8:1:2:ffff::2", 2))
    assert refused(srv.pport, pp_v2("2001:db8:1:2::3", 3)).status == 503  # same /64
    c = proxied(srv.pport, pp_v2("2001:db8:1:3::1", 4))  # the next /64
    for w in (a, b, c):
        w.close()


@pytest.mark.skipif(not have_ipv6(), reason="no ::1 here")
def test_direct_ipv6_client_on_loopback_is_limited(server_factory):
    srv = server_factory(workers=2, start=False, max_connections_per_ip=2)
    p6 = pick_free_port()
    srv.cfg["listen"].append(f"[::1]:{p6}")
    srv.write_config(srv.cfg)
    srv.start()
    a, b = RawWS(p6, host="::1"), RawWS(p6, host="::1")
    r = refused(p6, host="::1")
    assert r.status == 503 and r.header("retry-after") == "5"
    a.close()
    time.sleep(0.2)
    RawWS(p6, host="::1").close()
    b.close()


def test_counts_follow_a_handoff_once(lb_server):
    srv = lb_server(workers=2, max_connections_per_ip=2, reload_handoff=None)
    hdr = pp_v2("192.0.2.200", 5)
    a, b = proxied(srv.pport, hdr), proxied(srv.pport, hdr)
    assert a.echo("a") == b"a" and b.echo("b") == b"b"
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready")
    assert a.echo("a2") == b"a2" and b.echo("b2") == b"b2"
    wait_until(lambda: all(srv.workers().get(o, (0, 0))[1] == 2
                           for o in owners_on(srv, srv.pport, [a, b]).values()),
               10, what="both connections on generation 2")
    assert refused(srv.pport, hdr).status == 503, "not released by the old workers"
    a.close()
    time.sleep(0.2)
    c = proxied(srv.pport, hdr)  # released once by the new one
    assert refused(srv.pport, hdr).status == 503, "not released twice"
    b.close()
    c.close()


# ------------------------------------------------------------------ HAProxy

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend ws
    bind 127.0.0.1:{port}
    default_backend wsechod
backend wsechod
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server send-proxy-v2 check inter 200ms fall 1 rise 1
{servers}
"""


class HAProxy:
    def __init__(self, tmp, servers):
        self.tmp = Path(tmp)
        self.port = pick_free_port()
        self.sock = self.tmp / "haproxy.sock"
        lines = "\n".join(f"    server {n} 127.0.0.1:{p}" for n, p in servers)
        self.cfg = self.tmp / "haproxy.cfg"
        self.cfg.write_text(HAPROXY_CFG.format(sock=self.sock, port=self.port, servers=lines))
        self.log = open(self.tmp / "haproxy.log", "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def states(self):
        """{server: status} from the stats socket (UP, DOWN, ...)."""
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            data, _ = recv_until_eof(s, 2)
            s.close()
        except OSError:
            return {}
        rows = [l.split(",") for l in data.decode().splitlines() if l and not l.startswith("#")]
        head = data.decode().splitlines()[0].lstrip("# ").split(",")
        i = head.index("status")
        return {r[1]: r[i].split(" ")[0] for r in rows
                if r[0] == "wsechod" and r[1] not in ("BACKEND",)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Clients:
    """n WebSocket clients through the balancer, each echoing every 50 ms
    and reconnecting when the server closes (1001 on a drain)."""

    def __init__(self, port, n):
        self.port, self.n = port, n
        self.handshakes = self.failed = self.echoes = 0
        self.closes = {}
        self.stop = asyncio.Event()

    async def one(self, i):
        while not self.stop.is_set():
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/", open_timeout=5,
                                              ping_interval=None, compression=None)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
                self.failed += 1
                await asyncio.sleep(0.1)
                continue
            self.handshakes += 1
            try:
                while not self.stop.is_set():
                    await ws.send(f"m{i}")
                    assert await ws.recv() == f"m{i}"
                    self.echoes += 1
                    await asyncio.sleep(0.05)
                await ws.close()
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                self.closes[code] = self.closes.get(code, 0) + 1


@pytest.fixture
def two_instances(tmp_path):
    made = []

    def make(**kw):
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            port, pport = pick_free_port(), pick_free_port()
            cfg = base_config(d, port, workers=1, reload_handoff=None, shutdown_timeout="3s",
                              drain_spread="1s", health_paths={"readyz": "/readyz"}, **kw)
            cfg["listen"].append({"address": f"127.0.0.1:{pport}", "proxy_protocol": "on",
                                  "proxy_protocol_from": ["127.0.0.1/32"]})
            srv = Server(d, port, cfg)
            srv.pport = pport
            made.append(srv)
            srv.start()
        return made
    yield make
    for srv in made:
        srv.stop()
        new = srv.__dict__.get("new_master")
        if new and pid_alive(new):
            kids = children(new)
            os.kill(new, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new) and not any(pid_alive(k) for k in kids), 15,
                       what="new master gone")
        assert_no_sanitizer_reports(srv.san_dir)


@pytest.mark.skipif(HAPROXY is None, reason="needs haproxy (scripts/install-deps installs it)")
def test_haproxy_drain_then_reload_and_upgrade_lose_nobody(two_instances, tmp_path):
    a, b = two_instances()
    ha = HAProxy(tmp_path, [("a", a.pport), ("b", b.pport)])
    try:
        wait_until(lambda: ha.states() == {"a": "UP", "b": "UP"}, 10, what="both servers UP")
        cl = Clients(ha.port, 20)
        report = {}

        async def scenario():
            tasks = [asyncio.create_task(cl.one(i)) for i in range(cl.n)]
            await wait_for(lambda: cl.handshakes == cl.n, 10, "20 clients connected")
            on_a = len(established_inodes(a.pport))
            report["on_a"] = on_a
            assert on_a > 0 and len(established_inodes(b.pport)) > 0
            # (a) drain a: haproxy stops sending it anyone, its clients move to b
            t0 = time.monotonic()
            a.send_signal(signal.SIGTERM)
            await wait_for(lambda: ha.states().get("a") == "DOWN", 3, "a DOWN in haproxy")
            report["down_s"] = time.monotonic() - t0
            assert pid_alive(a.pid), "a is still serving its clients when it is taken out"
            await wait_for(lambda: a.proc.poll() is not None, 15, "a exited")
            report["drained_s"] = time.monotonic() - t0
            await wait_for(lambda: cl.handshakes == cl.n + on_a, 10, "clients reconnected")
            await wait_for(lambda: len(established_inodes(b.pport)) == cl.n, 5, "all on b")
            report["after_drain"] = (cl.handshakes, cl.failed, dict(cl.closes))
            # (b) reload b, then upgrade its binary: nobody notices
            echoes = cl.echoes
            b.send_signal(signal.SIGHUP)
            await wait_for(lambda: "generation 2 ready" in b.log_text(), 10, "b reloaded")
            await wait_for(lambda: "handing " in b.log_text(), 10, "handoff")
            await asyncio.sleep(0.5)
            old = b.pid
            b.send_signal(signal.SIGUSR2)
            await wait_for(lambda: b.proc.poll() is not None, 20, "old master of b gone")
            b.new_master = int(b.pid_file.read_text())
            assert b.new_master != old and b.proc.returncode == 0
            await asyncio.sleep(0.5)
            assert cl.echoes > echoes + 20 * 5, "echoes went on"
            assert ha.states().get("b") == "UP"
            cl.stop.set()
            await asyncio.gather(*tasks)
        run_async(scenario(), timeout=90)
        handshakes, failed, closes = report["after_drain"]
        assert failed == 0, f"{failed} failed handshakes"
        assert closes == {1001: report["on_a"]}, closes
        assert (cl.handshakes, cl.failed, cl.closes) == (handshakes, 0, closes), \
            "the reload and the upgrade disconnected someone"
        assert report["down_s"] < 1.5, report
        print(f"\nhaproxy: {cl.n} clients, {report['on_a']} on a; a DOWN in haproxy after "
              f"{report['down_s'] * 1000:.0f} ms, a exited after {report['drained_s']:.1f} s; "
              f"{report['on_a']} reconnects, 0 failed handshakes; reload + upgrade of b: "
              f"0 disconnects, {cl.echoes} echoes")
    finally:
        ha.stop()


async def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
