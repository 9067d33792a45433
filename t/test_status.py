"""The status listener (/metrics, /healthz, /readyz, /status, /status.json)
and health_paths on the main listeners, through real clients: Prometheus'
own text parser (python3-prometheus-client), websockets, raw sockets,
signals and PIDs."""

import json
import os
import signal
import socket
import ssl
import subprocess
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (RawWS, children, http_exchange, pick_free_port as free_port, run_async,
                      run_cli, wait_until, ws_connect)


def get(port, path, method="GET"):
    return http_exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())[0]


def scrape(port):
    """{(name, frozenset(labels)): value} from /metrics, parsed by Prometheus' parser."""
    r = get(port, "/metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def status_server(server_factory):
    def make(workers=2, **kw):
        sport = free_port()
        srv = server_factory(workers=workers, start=False,
                             status={"listen": f"127.0.0.1:{sport}"}, **kw)
        srv.sport = sport
        srv.start()
        wait_until(lambda: get(sport, "/readyz").status == 200, 10, what="status listener")
        # the start-up probe's WebSocket is counted before a test takes its baseline
        wait_until(lambda: val(scrape(sport), "wsechod_connection_duration_seconds_count") >= 1,
                   10, what="the probe's close counted")
        return srv
    return make


def status_pid(srv):
    for pid in children(srv.proc.pid):
        try:
            if "status process" in open(f"/proc/{pid}/cmdline").read():
                return pid
        except FileNotFoundError:
            pass
    return None


# ---------------------------------------------------------------- metrics

def test_metrics_parse_and_count_traffic(status_server):
    srv = status_server(workers=2)
    before = scrape(srv.sport)

    async def traffic():
        async with ws_connect(srv.port) as ws:
            for n in (10, 100, 5000):
                await ws.send(b"x" * n)
                assert len(await ws.recv()) == n
        ws = await ws_connect(srv.port)
        await ws.send("bye")
        await ws.recv()
        await ws.close(code=4001)
    run_async(traffic())
    assert get(srv.port, "/nope").status == 404      # a refused handshake
    ws = RawWS(srv.port)
    ws.sock.close()                                  # gone without a close frame

    def moved():
        m = scrape(srv.sport)
        return m if val(m, "wsechod_closes_total", code="1006", initiator="reset") >= 1 else None
    m = wait_until(moved, 10, what="the reset counted")
    d = lambda name, **l: val(m, name, **l) - val(before, name, **l)  # noqa: E731
    assert d("wsechod_messages_total", direction="in") == 4
    assert d("wsechod_messages_total", direction="out") == 4
    assert d("wsechod_payload_bytes_total", direction="in") == 5113
    assert d("wsechod_payload_bytes_total", direction="out") == 5113
    assert d("wsechod_wire_bytes_total", direction="in") > 5113
    assert d("wsechod_handshakes_total", status="101") == 3
    assert d("wsechod_handshakes_total", status="404") == 1
    assert d("wsechod_closes_total", code="1000", initiator="client") == 1
    assert d("wsechod_closes_total", code="other", initiator="client") == 1
    assert d("wsechod_connections_accepted_total") >= 4
    # the histogram: 10 and "bye" <= 64, 100 <= 256, 5000 <= 16384
    assert d("wsechod_message_size_bytes_bucket", le="64") == 2
    assert d("wsechod_message_size_bytes_bucket", le="256") == 3
    assert d("wsechod_message_size_bytes_bucket", le="4096") == 3
    assert d("wsechod_message_size_bytes_bucket", le="16384") == 4
    assert d("wsechod_message_size_bytes_count") == 4
    assert d("wsechod_connection_duration_seconds_count") == 3
    pids = {int(dict(k[1])["pid"]) for k in m if k[0] == "wsechod_connections_open"}
    assert pids == set(srv.workers()), (pids, srv.workers())
    assert val(m, "wsechod_resident_memory_bytes", process="master",
               pid=str(srv.proc.pid)) > 0
    assert val(m, "wsechod_generations", state="serving") == 1


def test_connections_open_gauge_follows_clients(status_server):
    srv = status_server(workers=1)
    socks = [RawWS(srv.port) for _ in range(5)]
    for s in socks:
        assert s.echo(b"hi") == b"hi"

    def open_now():
        return sum(v for k, v in scrape(srv.sport).items() if k[0] == "wsechod_connections_open")
    wait_until(lambda: open_now() == 5, 5, what="5 open")
    for s in socks:
        s.close()
    wait_until(lambda: open_now() == 0, 5, what="0 open")


def test_counters_survive_reload_worker_death_and_status_restart(status_server):
    srv = status_server(workers=2)

    async def echo(n):
        async with ws_connect(srv.port) as ws:
            for _ in range(n):
                await ws.send("m")
                await ws.recv()
    run_async(echo(7))
    m0 = scrape(srv.sport)
    assert val(m0, "wsechod_messages_total", direction="in") >= 7
    # a worker killed: its counts stay in the sums, its exit is counted
    victim = sorted(srv.workers())[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in srv.workers() and len(srv.workers()) == 2, 10,
               what="the worker respawned")
    m1 = scrape(srv.sport)
    assert val(m1, "wsechod_messages_total", direction="in") == \
        val(m0, "wsechod_messages_total", direction="in")
    assert val(m1, "wsechod_worker_exits_total", cause="signal") == 1
    # a reload: new workers, the same sums, one more reload
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: val(scrape(srv.sport), "wsechod_reloads_total", result="ok") == 1, 10,
               what="the reload counted")
    run_async(echo(3))
    m2 = scrape(srv.sport)
    assert val(m2, "wsechod_messages_total", direction="in") == \
        val(m0, "wsechod_messages_total", direction="in") + 3
    for k, v in m1.items():                     # every counter monotonic
        if k[0].endswith("_total") and "pid" not in dict(k[1]):
            assert m2.get(k, 0) >= v, k
    # a bad reload is counted too, and changes nothing
    cfg = dict(srv.cfg)
    cfg["worker_processes"] = "lots"
    srv.write_config(cfg)
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: val(scrape(srv.sport), "wsechod_reloads_total", result="failed") == 1,
               10, what="the failed reload counted")
    # the status process killed: the master starts another, the sums are kept
    sp = status_pid(srv)
    assert sp is not None
    os.kill(sp, signal.SIGKILL)
    wait_until(lambda: status_pid(srv) not in (None, sp), 10, what="a new status process")
    wait_until(lambda: get(srv.sport, "/healthz").status == 200, 10, what="status again")
    m3 = scrape(srv.sport)
    assert val(m3, "wsechod_messages_total", direction="in") == \
        val(m2, "wsechod_messages_total", direction="in")


def test_handoff_is_counted_and_keeps_the_connection_age(status_server):
    srv = status_server(workers=1, reload_handoff="on")
    m0 = scrape(srv.sport)
    d = lambda m, name, **l: val(m, name, **l) - val(m0, name, **l)  # noqa: E731

    async def run():
        async with ws_connect(srv.port) as ws:
            await ws.send("a")
            await ws.recv()
            await asyncio_sleep(1.3)
            srv.send_signal(signal.SIGHUP)
            wait_until(lambda: d(scrape(srv.sport), "wsechod_handoffs_total",
                                 result="received") == 1, 10, what="the handoff")
            await ws.send("b")
            assert await ws.recv() == "b"
    run_async(run())
    # its age went with it: more than a second, not since the handoff
    m = wait_until(lambda: (lambda m: m if d(m, "wsechod_connection_duration_seconds_count") == 1
                            else None)(scrape(srv.sport)), 5, what="the close counted")
    assert d(m, "wsechod_handoffs_total", result="sent") == 1
    assert d(m, "wsechod_handoffs_total", result="failed") == 0
    assert d(m, "wsechod_connection_duration_seconds_bucket", le="1") == 0
    assert d(m, "wsechod_connection_duration_seconds_sum") >= 1.2
    assert d(m, "wsechod_closes_total", code="1000", initiator="client") == 1


async def asyncio_sleep(s):
    import asyncio
    await asyncio.sleep(s)


def test_tls_handshakes_by_version(server_factory, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl")
    key, pem = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", "2", "-subj", "/CN=a.test"], check=True, capture_output=True)
    sport, tport = free_port(), free_port()
    srv = server_factory(workers=1, start=False, status={"listen": f"127.0.0.1:{sport}"})
    srv.cfg["listen"] = [f"127.0.0.1:{srv.port}",
                         {"address": f"127.0.0.1:{tport}",
                          "tls": {"certificate": str(pem), "key": str(key)}}]
    srv.write_config(srv.cfg)
    srv.start()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tport), 5) as raw, \
                ctx.wrap_socket(raw) as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            assert t.recv(4096).startswith(b"HTTP/1.1 101")
    with socket.create_connection(("127.0.0.1", tport), 5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")   # plaintext to TLS: a failure
        raw.settimeout(5)
        raw.recv(100)

    def counted():
        m = scrape(sport)
        ok = val(m, "wsechod_tls_handshakes_total", version="TLSv1.3", resumed="no") == 1 and \
            val(m, "wsechod_tls_handshakes_total", version="TLSv1.2", resumed="no") == 1 and \
            val(m, "wsechod_tls_handshake_failures_total") == 1
        return m if ok else None
    wait_until(counted, 5, what="TLS handshakes by version")


# ---------------------------------------------------------------- health

def test_readyz_turns_503_while_draining(status_server):
    srv = status_server(workers=1, shutdown_timeout="6s", close_timeout="2s")
    assert get(srv.sport, "/readyz").status == 200
    assert get(srv.sport, "/healthz").status == 200
    ws = RawWS(srv.port)
    assert ws.echo(b"x") == b"x"            # keeps the worker draining a while
    srv.send_signal(signal.SIGTERM)
    r = wait_until(lambda: (lambda r: r if r.status == 503 else None)(get(srv.sport, "/readyz")),
                   5, what="readyz 503")
    assert b"stopping" in r.body
    assert srv.proc.poll() is None          # the master still runs: the balancer was told first
    m = scrape(srv.sport)
    assert val(m, "wsechod_draining") == 1
    assert ws.recv_close(timeout=10)[0] == 1001
    ws.send_frame(8, b"\x03\xe9")          # the close reply
    ws.abort()
    assert srv.wait_exit(15) == 0


def test_health_paths_on_the_main_listener(server_factory):
    srv = server_factory(workers=1, health_paths={"healthz": "/hz", "readyz": "/ready"})
    r = get(srv.port, "/hz")
    assert (r.status, r.body) == (200, b"ok\n")
    r = get(srv.port, "/ready?from=lb")
    assert (r.status, r.body) == (200, b"ok\n")
    r = get(srv.port, "/ready", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert RawWS(srv.port, path="/echo").echo(b"still") == b"still"
    assert get(srv.port, "/healthz").status != 200   # only the configured paths


def test_no_health_paths_by_default(server):
    assert get(server.port, "/healthz").status != 200
    assert get(server.port, "/readyz").status != 200


# ---------------------------------------------------------------- pages

def test_status_json_and_page(status_server):
    srv = status_server(workers=2)
    d = json.loads(get(srv.sport, "/status.json").body)
    assert d["master"]["pid"] == srv.proc.pid
    assert d["master"]["ready"] is True and d["master"]["stopping"] is False
    assert d["master"]["config_file"] == str(srv.config_path)
    assert {w["pid"] for w in d["workers"]} == set(srv.workers())
    assert [g["state"] for g in d["generations"]] == ["serving"]
    assert any("generation 1 serving" in e["text"] for e in d["events"])
    r = get(srv.sport, "/status")
    assert r.status == 200 and r.header("content-type").startswith("text/html")
    assert b"<svg" in r.body or b"createElementNS" in r.body
    assert b"http://" not in r.body.replace(b"http://www.w3.org/2000/svg", b"")  # no assets
    assert get(srv.sport, "/nothing").status == 404
    assert get(srv.sport, "/metrics", method="POST").status == 405
    assert get(srv.sport, "/metrics", method="HEAD").body == b""


def test_status_listener_ignores_slow_and_garbage_clients(status_server):
    srv = status_server(workers=1)
    idle = [socket.create_connection(("127.0.0.1", srv.sport)) for _ in range(10)]
    junk = socket.create_connection(("127.0.0.1", srv.sport))
    junk.sendall(b"\x16\x03\x01" + b"A" * 5000)
    assert get(srv.sport, "/healthz").status == 200
    assert RawWS(srv.port).echo(b"fine") == b"fine"
    for s in idle + [junk]:
        s.close()


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("text,msg", [
    ("status: {listen: 'nowhere'}\n", "1:18: status.listen: invalid address"),
    ("status: {port: 9145}\n", "1:10: status: unknown key 'port'"),
    ("status: {}\n", "1:9: status: 'listen' is required"),
    ("listen: [127.0.0.1:9145]\nstatus: {listen: 127.0.0.1:9145}\n",
     "2:18: status.listen: '127.0.0.1:9145' is also in listen"),
    ("health_paths: {healthz: health}\n", "1:25: health_paths.healthz: 'health' is not an "
     "absolute path"),
    ("health_paths: {alive: /a}\n", "1:16: health_paths: unknown key 'alive'"),
    ("routes: {/chat: echo}\nhealth_paths: {readyz: /chat}\n",
     "2:24: health_paths.readyz: '/chat' is a WebSocket route"),
])
def test_config_errors_name_the_node(tmp_path, san_dir, text, msg):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    r = run_cli(["-t", "-c", p], san_dir)
    assert r.returncode != 0
    assert f"{p}:{msg}" in r.stderr, r.stderr


def test_status_address_in_use_refuses_start(tmp_path, server_factory):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    srv = server_factory(workers=1, start=False, status={"listen": f"127.0.0.1:{port}"})
    srv.start(wait=False)
    assert srv.wait_exit(10) != 0
    assert "status.listen" in srv.stderr_text()
    busy.close()


# ---------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium")


def chromium(*args, timeout=60):
    """Headless Chromium from Debian; virtual time lets the page's fetches finish."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--disable-extensions", "--virtual-time-budget=6000",
                           f"--user-data-dir={args[0]}", *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_status_page_renders_in_chromium(status_server, tmp_path):
    srv = status_server(workers=2)

    async def traffic():
        async with ws_connect(srv.port) as ws:
            for _ in range(25):
                await ws.send("hello")
                await ws.recv()
    run_async(traffic())
    url = f"http://127.0.0.1:{srv.sport}/status"
    r = chromium(tmp_path / "profile", "--dump-dom", url)
    dom = r.stdout
    assert r.returncode == 0, r.stderr[-2000:]
    # what the page's script wrote from /status.json, not what the server sent
    assert "<span id=\"state\" class=\"ok\">ready</span>" in dom, dom[:3000]
    assert f"master {srv.proc.pid} up since" in dom
    for pid in srv.workers():
        assert f"<td>{pid}</td>" in dom
    assert dom.count("<polyline") == 4               # 2 workers x (messages/s, bytes/s)
    assert "generation 1 serving: 2 workers" in dom
    assert "26 / 26" in dom or "25 / 25" in dom or "27 / 27" in dom   # messages in / out
    shot = Path(__file__).resolve().parent.parent / "build" / "status-page.png"
    r = chromium(tmp_path / "profile2", "--window-size=1200,800", f"--screenshot={shot}", url)
    assert r.returncode == 0 and shot.stat().st_size > 10000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_status_process_runs_as_the_workers_user(status_server):
    import pwd
    import re
    nobody = pwd.getpwnam("nobody")
    srv = status_server(workers=1, user="nobody")
    pid = status_pid(srv)
    uid = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", open(f"/proc/{pid}/status").read(),
                    re.M).groups()
    assert set(uid) == {str(nobody.pw_uid)}, uid
    assert get(srv.sport, "/healthz").status == 200
    assert val(scrape(srv.sport), "wsechod_resident_memory_bytes", process="master",
               pid=str(srv.proc.pid)) >= 0    # /proc of the others is still readable or 0
