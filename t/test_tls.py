"""wss:// terminated in the worker (OpenSSL): certificates and SNI, protocol
versions, ALPN, refusals at the TLS level, `-t` checks with file:line:col,
certificate renewal on reload, session resumption across workers and
reloads. Certificates are made here, at test time, with the openssl command."""

import asyncio
import hashlib
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from conftest import RawWS, run_async, run_cli, wait_until, write_config, ws_connect

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


def make_cert(d, name, kind="rsa", days=2):
    """A self-signed certificate for DNS name `name` (RSA 2048 or ECDSA P-256)."""
    key, pem = d / f"{name}.key", d / f"{name}.pem"
    algo = ["-newkey", "rsa:2048"] if kind == "rsa" else \
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run([OPENSSL, "req", "-x509", *algo, "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", str(days), "-subj", f"/CN={name}", "-addext",
                    f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    return pem, key


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    return {"a": make_cert(d, "a.test"), "b": make_cert(d, "b.test", "ecdsa"), "dir": d}


def tls_listen(port, tport, certs, **tls):
    a_pem, a_key = certs["a"]
    b_pem, b_key = certs["b"]
    entry = {"certificate": str(a_pem), "key": str(a_key),
             "certificates": [{"certificate": str(b_pem), "key": str(b_key)}], **tls}
    return [f"127.0.0.1:{port}", {"address": f"127.0.0.1:{tport}", "tls": entry}]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


@pytest.fixture
def tls_server(server_factory, certs):
    def make(workers=1, **kw):
        srv = server_factory(workers=workers, start=False, **kw)
        srv.tport = free_port()
        srv.cfg["listen"] = tls_listen(srv.port, srv.tport, certs)
        srv.write_config(srv.cfg)
        srv.start()
        return srv
    return make


def client_ctx(cafile=None, **kw):
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else \
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def fingerprint(port, name="a.test"):
    with socket.create_connection(("127.0.0.1", port), 5) as raw, \
            client_ctx().wrap_socket(raw, server_hostname=name) as t:
        return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def wss(srv, path="/", host="a.test", ca=None, **kw):
    ctx = client_ctx(ca) if ca else client_ctx()
    for k, v in (("max_size", None), ("compression", None), ("open_timeout", 5),
                 ("close_timeout", 5), ("ping_interval", None)):
        kw.setdefault(k, v)
    return websockets.connect(f"wss://127.0.0.1:{srv.tport}{path}", ssl=ctx,
                              server_hostname=host, **kw)


# ---------------------------------------------------------------- echo

def test_wss_echo_text_binary_large_and_close_codes(tls_server, certs):
    srv = tls_server(workers=2)

    async def scenario():
        async with wss(srv, ca=certs["a"][0]) as ws:
            tls = ws.transport.get_extra_info("ssl_object")
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            big = bytes(range(256)) * 4096                 # 1 MiB, many records
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "mented", " text"])    # a fragmented message
            assert await ws.recv() == "fragmented text"
            await ws.close(4001, "bye")
            return tls.version(), tls.selected_alpn_protocol(), ws.close_code
    version, alpn, code = run_async(scenario())
    assert version == "TLSv1.3"
    assert code == 4001


def test_plain_listener_still_serves_beside_tls(tls_server):
    srv = tls_server()
    ws = RawWS(srv.port)
    assert ws.echo(b"plain") == b"plain"
    ws.close()


def test_sni_chooses_the_certificate(tls_server, certs):
    srv = tls_server()
    a = hashlib.sha256(ssl.PEM_cert_to_DER_cert(certs["a"][0].read_text())).hexdigest()
    b = hashlib.sha256(ssl.PEM_cert_to_DER_cert(certs["b"][0].read_text())).hexdigest()
    assert fingerprint(srv.tport, "b.test") == b
    assert fingerprint(srv.tport, "a.test") == a
    assert fingerprint(srv.tport, "unknown.test") == a      # the top-level one

    async def verified():
        async with wss(srv, host="b.test", ca=certs["b"][0]) as ws:   # hostname checked
            await ws.send("b")
            return await ws.recv()
    assert run_async(verified()) == "b"


# ---------------------------------------------------------------- refusals

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_protocol_versions_are_refused(tls_server, version):
    srv = tls_server()
    ctx = client_ctx()
    v = getattr(ssl.TLSVersion, version)
    ctx.minimum_version = ctx.maximum_version = v
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw).close()
    srv.wait_log("unsupported protocol", what="the refused handshake logged")


def test_alpn_http11_is_chosen_and_an_offer_without_it_is_refused(tls_server):
    srv = tls_server()
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw, ctx.wrap_socket(raw) as t:
        assert t.selected_alpn_protocol() == "http/1.1"
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw:
        with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
            ctx.wrap_socket(raw).close()


def test_plain_http_to_a_tls_port_gets_a_tls_alert(tls_server):
    srv = tls_server()
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        data = b""
        while True:
            d = s.recv(100)
            if not d:
                break
            data += d
    assert data == bytes([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x0a])  # fatal unexpected_message


def test_client_hello_to_a_plain_port_gets_400(tls_server):
    srv = tls_server()
    ctx = client_ctx()
    with socket.create_connection(("127.0.0.1", srv.port), 5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            ctx.wrap_socket(raw).close()
    srv.wait_log("refused: 400", what="a 400 for the ClientHello")


def test_failed_handshakes_do_not_touch_open_connections(tls_server, certs):
    srv = tls_server()

    async def scenario():
        async with wss(srv) as ws:
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", srv.tport), 5) as s:
                    s.sendall(b"\x16\x03\x01\x00\x30" + b"\x01" + b"\xee" * 47)  # a broken ClientHello
                    s.settimeout(2)
                    try:
                        s.recv(100)
                    except OSError:
                        pass
            await ws.send("still here")
            return await ws.recv()
    assert run_async(scenario()) == "still here"


# ---------------------------------------------------------------- -t

def check(tmp_path, san_dir, tls_yaml):
    text = ('pid_file: /tmp/x.pid\n'                       # line 1
            'listen:\n'                                    # line 2
            '  - address: 127.0.0.1:1\n'                   # line 3
            '    tls:\n'                                   # line 4
            f'{tls_yaml}')                                 # line 5...
    path = write_config(tmp_path / "c.yaml", text)
    return path, run_cli(["-t", "-c", path], san_dir)


def test_t_checks_certificates_and_keys(tmp_path, san_dir, certs):
    a_pem, a_key = certs["a"]
    b_pem, b_key = certs["b"]
    path, r = check(tmp_path, san_dir, f"      certificate: {a_pem}\n      key: {a_key}\n")
    assert r.returncode == 0, r.stderr
    path, r = check(tmp_path, san_dir, f"      certificate: {a_pem}\n      key: {b_key}\n")
    assert r.returncode == 1 and f"{path}:5:20: tls.key:" in r.stderr, r.stderr
    assert "does not match the certificate" in r.stderr or "mismatch" in r.stderr, r.stderr
    path, r = check(tmp_path, san_dir, f"      certificate: {tmp_path}/none.pem\n      key: {a_key}\n")
    assert r.returncode == 1 and f"{path}:5:20: tls.certificate:" in r.stderr, r.stderr
    assert "No such file" in r.stderr
    path, r = check(tmp_path, san_dir, f"      certificate: {a_key}\n      key: {a_key}\n")
    assert r.returncode == 1 and f"{path}:5:20: tls.certificate:" in r.stderr, r.stderr
    path, r = check(tmp_path, san_dir, f"      certificate: {a_pem}\n")
    assert r.returncode == 1 and "needs both 'certificate' and 'key'" in r.stderr, r.stderr
    path, r = check(tmp_path, san_dir, f"      certificate: {a_pem}\n      key: {a_key}\n"
                                       "      protocols: [TLSv1.1, TLSv1.2]\n")
    assert r.returncode == 1 and f"{path}:7:" in r.stderr and "TLSv1.1" in r.stderr, r.stderr


def test_t_warns_about_an_expired_certificate(tmp_path, san_dir):
    d = tmp_path / "old"
    d.mkdir()
    pem, key, csr = d / "old.pem", d / "old.key", d / "old.csr"
    (d / "index.txt").write_text("")
    (d / "ca.cnf").write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\n"
                              f"new_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\n"
                              "policy = p\n[p]\ncommonName = supplied\n")
    (d / "serial").write_text("01\n")
    subprocess.run([OPENSSL, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(csr), "-subj", "/CN=old.test"], check=True, capture_output=True)
    # A certificate valid for one day in 2020: `openssl ca` sets both dates.
    subprocess.run([OPENSSL, "ca", "-batch", "-config", str(d / "ca.cnf"), "-selfsign",
                    "-keyfile", str(key), "-in", str(csr), "-out", str(pem),
                    "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"],
                   check=True, capture_output=True)
    path, r = check(tmp_path, san_dir, f"      certificate: {pem}\n      key: {key}\n")
    assert r.returncode == 0, r.stderr
    assert "has expired" in r.stderr and f"{path}:5:20:" in r.stderr, r.stderr


# ---------------------------------------------------------------- reload

def test_reload_serves_a_renewed_certificate_and_keeps_open_wss(tls_server, certs):
    srv = tls_server(shutdown_timeout="20s")
    before = fingerprint(srv.tport)

    async def scenario():
        async with wss(srv) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            make_cert(certs["dir"], "a.test")               # certbot renews in place
            srv.send_signal(signal.SIGHUP)
            srv.wait_log("generation 2 ready", what="generation 2 ready")
            after = fingerprint(srv.tport)
            await ws.send("after")                          # the old worker still serves it
            return after, await ws.recv()
    after, echoed = run_async(scenario(), timeout=40)
    assert after != before
    assert echoed == "after"


def test_a_bad_certificate_on_reload_changes_nothing(tls_server, certs):
    srv = tls_server()
    before = fingerprint(srv.tport)
    certs["a"][1].write_text("not a key\n")
    srv.send_signal(signal.SIGHUP)
    line = srv.wait_log("reload failed", what="the refused reload")
    assert "tls.key" in line, line
    assert fingerprint(srv.tport) == before


# ---------------------------------------------------------------- resumption

def resumed_connects(port, n):
    """n connections, each offering the session of the one before."""
    ctx = client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2   # the session is known right after the handshake
    session, reused = None, []
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), 5) as raw, \
                ctx.wrap_socket(raw, session=session) as t:
            reused.append(t.session_reused)
            session = t.session
    return reused


def test_sessions_resume_across_workers_and_reloads(tls_server):
    srv = tls_server(workers=2)
    reused = resumed_connects(srv.tport, 12)
    assert reused[0] is False and all(reused[1:]), reused   # whichever worker takes it
    ctx = client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw, ctx.wrap_socket(raw) as t:
        session = t.session
    srv.send_signal(signal.SIGHUP)
    srv.wait_log("generation 2 ready", what="generation 2 ready")
    time.sleep(0.5)
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw, \
            ctx.wrap_socket(raw, session=session) as t:
        assert t.session_reused                              # the new generation knows the key


def test_ticket_keys_rotate_and_reach_every_worker(tls_server):
    """session_ticket_rotation: a ticket made with the key before the
    current one still resumes (on any worker: the master sends new keys to
    all of them), one two rotations old does not."""
    srv = tls_server(workers=2, session_ticket_rotation="1s")
    ctx = client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def connect(session=None):
        with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw, \
                ctx.wrap_socket(raw, session=session) as t:
            return t.session, t.session_reused
    srv.wait_log("TLS session ticket keys rotated", what="a first rotation")
    old, _ = connect()
    srv.wait_log(lambda line: srv.log_text().count("ticket keys rotated") >= 2, timeout=5,
                 what="the next rotation")
    assert all(connect(old)[1] for _ in range(8)), "the previous key still decrypts, everywhere"
    fresh, _ = connect()
    time.sleep(2.5)                                   # two more rotations
    assert not connect(old)[1], "a ticket two keys old is refused (full handshake)"
    assert connect(fresh)[1] is not None


def test_a_stalled_tls_handshake_is_closed_by_handshake_timeout(tls_server):
    srv = tls_server(handshake_timeout="500ms")
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as s:
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""                      # closed, nothing said
        took = time.monotonic() - t0
    assert took < 3, took
    srv.wait_log("not completed in time", what="the timeout logged")
    with socket.create_connection(("127.0.0.1", srv.tport), 5) as raw, \
            client_ctx().wrap_socket(raw) as t:
        t.sendall(b"GET / HTTP/1.1\r\n")               # TLS done, HTTP stalls: 408
        t.settimeout(5)
        assert b" 408 " in t.recv(1000)


def test_wss_backpressure_loses_nothing(server_factory, certs):
    """A wss client that stops reading while the server streams 16 KiB
    messages fills the socket (OpenSSL's writes then wait for EPOLLOUT);
    once it reads again every message arrives, in order."""
    srv = server_factory(workers=1, start=False, max_pending_output="256k", routes={
        "/": "echo", "/fast": {"module": "stream", "interval": "1ms", "size": "16k"}})
    srv.tport = free_port()
    srv.cfg["listen"] = tls_listen(srv.port, srv.tport, certs)
    srv.write_config(srv.cfg)
    srv.start()

    async def scenario():
        async with wss(srv, "/fast", max_queue=1, read_limit=2 ** 16, write_limit=2 ** 16) as ws:
            await asyncio.sleep(1.5)                  # not reading: the socket fills up
            return [int((await ws.recv()).rstrip(".")) for _ in range(400)]
    nums = run_async(scenario(), timeout=40)
    assert nums == list(range(400))
