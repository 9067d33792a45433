"""The error log: UTC times with their offset, log_format json, the syslog
<N> priority when stderr is the journal (JOURNAL_STREAM), start-up errors
on stderr and in the log, and `-T` (the effective configuration)."""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest
import yaml

from conftest import (BIN, REPO, RawWS, Server, base_config, run_cli, sanitizer_env,
                      wait_until, write_config)

LEVELS = ("debug", "info", "notice", "warn", "error")
PRIORITY = {"debug": 7, "info": 6, "notice": 5, "warn": 4, "error": 3}
STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
TEXT_RE = re.compile(rf"^({STAMP}) \[({'|'.join(LEVELS)})\] (\d+): (\S.*)$")
# Under the journal the time is journald's: no stamp, the priority first.
JOURNAL_RE = re.compile(rf"^<([0-7])>\[({'|'.join(LEVELS)})\] (\d+): (\S.*)$")
# Bytes a message may carry (here: through $NOTIFY_SOCKET, which the master
# logs at warn when it is no socket path): a quote, a backslash, a tab, a
# control character, valid UTF-8 and a byte that is not UTF-8 (\udcff is
# how Python spells the raw byte 0xff in the environment).
NASTY = 'x"q\\b\tc\x01 \u00e9\u20ac \udcff!'
NASTY_LOGGED = 'x"q\\b\tc\x01 \u00e9\u20ac \ufffd!'


@pytest.fixture
def other_tz(monkeypatch):
    """A local time 5:30 away from UTC, so local time cannot pass for UTC."""
    monkeypatch.setenv("TZ", "IST-5:30")


def assert_utc_now(stamp, slack=120):
    t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(t.timestamp() - time.time()) < slack, f"{stamp} is not UTC now"


def busy_start(srv):
    """Some lines of every level: info/debug from workers, a warn, an error."""
    victim = next(iter(srv.workers()))
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(lambda l: f"worker {victim}" in l and "killed by signal 9" in l,
                 what="worker death")
    srv.wait_ready(1)
    ws = RawWS(srv.port)
    assert ws.echo("x") == b"x"
    ws.close()
    return victim


# ------------------------------------------------------------------ formats

def test_text_lines_are_utc_with_the_offset(server_factory, other_tz):
    srv = server_factory(workers=1, log_level="debug")
    busy_start(srv)
    assert srv.stop() == 0
    lines = srv.log_text().splitlines()
    assert len(lines) >= 4
    for line in lines:
        m = TEXT_RE.match(line)
        assert m, f"bad text line: {line!r}"
        assert_utc_now(m.group(1))
    assert any("[error]" in l for l in lines) and any("[debug]" in l for l in lines)


def test_json_lines_parse_and_carry_the_fields(server_factory, other_tz, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", NASTY)
    srv = server_factory(workers=1, log_level="debug", log_format="json")
    victim = busy_start(srv)
    assert srv.stop() == 0
    raw = srv.log_path.read_bytes()
    raw.decode("utf-8")  # strict: the log is valid UTF-8 whatever was logged
    objs = [json.loads(line) for line in raw.splitlines()]
    assert len(objs) >= 4
    ours = {srv.pid} | srv.seen
    for o in objs:
        assert list(o) == ["time", "level", "pid", "msg"], o
        assert re.fullmatch(STAMP, o["time"]), o
        assert_utc_now(o["time"])
        assert o["level"] in LEVELS and isinstance(o["pid"], int) and o["pid"] in ours, o
        assert isinstance(o["msg"], str) and o["msg"], o
    assert {o["level"] for o in objs} >= {"debug", "info", "notice", "warn", "error"}
    death = [o for o in objs if f"worker {victim}" in o["msg"] and "killed" in o["msg"]]
    assert death and death[0]["level"] == "error" and death[0]["pid"] == srv.pid
    warn = [o for o in objs if "NOTIFY_SOCKET" in o["msg"]]
    assert warn and warn[0]["msg"] == f"ignoring NOTIFY_SOCKET '{NASTY_LOGGED}': " \
                                      "not a unix socket path", warn


def test_log_format_changes_on_reload(server_factory):
    srv = server_factory(workers=1)
    srv.write_config(dict(srv.cfg, log_format="json"))
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(lambda l: "reload complete" in l, what="reload complete")
    srv.wait_ready(1)
    srv.write_config(dict(srv.cfg, log_format="text"))
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(lambda l: TEXT_RE.match(l) and "reload complete" in l and
                 "generation 3" in l, what="second reload")
    # The master's lines (draining workers keep the format they started with).
    lines = [parse(l) for l in srv.log_text().splitlines()]
    lines = [(fmt, msg) for fmt, pid, msg in lines if pid == srv.pid]
    first = next(i for i, (_f, m) in enumerate(lines) if m.startswith("reloading"))
    done = next(i for i, (_f, m) in enumerate(lines) if m.startswith("reload complete"))
    second = next(i for i, (_f, m) in enumerate(lines) if i > done and m.startswith("reloading"))
    assert {f for f, _m in lines[:first + 1]} == {"text"}, lines
    assert {f for f, _m in lines[done:second + 1]} == {"json"}, lines
    assert ("text", "reload complete: generation 3, 1 workers") in lines[second:], lines
    srv.write_config(dict(srv.cfg, log_format="yaml"))
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(lambda l: "reload failed" in l, what="failed reload")
    fmt, _pid, msg = parse(srv.log_text().splitlines()[-1])
    assert fmt == "text" and "log_format: expected text or json, got 'yaml'" in msg


def parse(line):
    """(format, pid, msg) of a text or json line."""
    if line.startswith("{"):
        o = json.loads(line)
        return "json", o["pid"], o["msg"]
    m = TEXT_RE.match(line)
    assert m, f"bad line: {line!r}"
    return "text", int(m.group(3)), m.group(4)


# ------------------------------------------------------------------ journald

class StderrServer(Server):
    """Logs to stderr: its log is the file its stderr goes to."""
    @property
    def log_path(self):
        return self.tmp / "server.stderr"


def journal_server(tmp_path, port, monkeypatch, fmt, target, tail=""):
    """A server logging to stderr, which is the file server.stderr; target
    (a path) is what JOURNAL_STREAM names (+ tail): that file or another."""
    srv = StderrServer(tmp_path, port, base_config(tmp_path, port, workers=1, error_log="stderr",
                                             log_level="debug", log_format=fmt))
    (tmp_path / "server.stderr").touch()
    st = os.stat(target)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}{tail}")
    return srv


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_journal_lines_carry_their_priority(tmp_path, free_port, monkeypatch, fmt):
    monkeypatch.setenv("NOTIFY_SOCKET", "not-a-path")  # a warn line
    srv = journal_server(tmp_path, free_port, monkeypatch, fmt, tmp_path / "server.stderr")
    try:
        srv.start()
        busy_start(srv)
    finally:
        assert srv.stop() == 0
    lines = srv.stderr_text().splitlines()
    seen = set()
    for line in lines:
        if fmt == "text":
            m = JOURNAL_RE.match(line)
            assert m, f"bad journal line: {line!r}"
            prio, level = int(m.group(1)), m.group(2)
        else:
            m = re.match(r"^<([0-7])>(\{.*\})$", line)
            assert m, f"bad journal line: {line!r}"
            prio, level = int(m.group(1)), json.loads(m.group(2))["level"]
        assert prio == PRIORITY[level], line
        seen.add(level)
    assert seen == set(LEVELS), seen


@pytest.mark.parametrize("stream", ["another file", "garbage"])
def test_no_priority_when_stderr_is_not_the_journal(tmp_path, free_port, monkeypatch, stream):
    other = tmp_path / "elsewhere"
    other.touch()
    if stream == "garbage":  # the right file, spelt wrong
        srv = journal_server(tmp_path, free_port, monkeypatch, "text",
                             tmp_path / "server.stderr", tail="x")
    else:
        srv = journal_server(tmp_path, free_port, monkeypatch, "text", other)
    try:
        srv.start()
        busy_start(srv)
    finally:
        assert srv.stop() == 0
    lines = srv.stderr_text().splitlines()
    assert len(lines) >= 4
    for line in lines:
        assert TEXT_RE.match(line), f"expected a plain text line: {line!r}"


# ------------------------------------------------------------------ start-up errors

def start_on_taken_port(tmp_path, san_dir, port, error_log, stderr=subprocess.PIPE):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        cfg = write_config(tmp_path / "c.yaml",
                           base_config(tmp_path, port, workers=1, error_log=error_log))
        return subprocess.run([str(BIN), "-c", str(cfg)], stdout=subprocess.PIPE,
                              stderr=stderr, timeout=15, env=sanitizer_env(san_dir))
    finally:
        blocker.close()


def test_startup_error_goes_to_stderr_and_to_the_log_file(tmp_path, san_dir, free_port):
    log = tmp_path / "error.log"
    r = start_on_taken_port(tmp_path, san_dir, free_port, str(log))
    assert r.returncode == 1
    err = r.stderr.decode()
    want = f"cannot listen on 127.0.0.1:{free_port}"
    assert err.count(want) == 1 and err.startswith("wsechod: [error] "), err
    logged = [l for l in log.read_text().splitlines() if want in l]
    assert len(logged) == 1 and TEXT_RE.match(logged[0]), log.read_text()
    assert not (tmp_path / "wsechod.pid").exists()


def test_startup_error_once_when_the_log_is_stderr(tmp_path, san_dir, free_port):
    r = start_on_taken_port(tmp_path, san_dir, free_port, "stderr")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count(f"cannot listen on 127.0.0.1:{free_port}") == 1, err
    assert TEXT_RE.match(err.splitlines()[0]), err


def test_startup_error_once_when_stderr_is_the_log_file(tmp_path, san_dir, free_port):
    log = tmp_path / "error.log"
    with open(log, "ab") as f:
        r = start_on_taken_port(tmp_path, san_dir, free_port, str(log), stderr=f)
    assert r.returncode == 1
    assert log.read_text().count(f"cannot listen on 127.0.0.1:{free_port}") == 1, \
        log.read_text()


def test_an_unopenable_log_is_reported_on_stderr(tmp_path, san_dir, free_port):
    cfg = write_config(tmp_path / "c.yaml", base_config(
        tmp_path, free_port, workers=1, error_log=str(tmp_path / "no" / "such" / "error.log")))
    r = run_cli(["-c", cfg], san_dir)
    assert r.returncode == 1
    assert r.stderr.count("cannot open error_log") == 1, r.stderr
    assert not (tmp_path / "wsechod.pid").exists()


# ------------------------------------------------------------------ log_format checked

def test_bad_log_format_fails_t_with_its_location(tmp_path, san_dir):
    cfg = write_config(tmp_path / "c.yaml", "log_level: info\nlog_format: xml\n")
    r = run_cli(["-t", "-c", cfg], san_dir)
    assert r.returncode == 1
    assert f"{cfg}:2:13: log_format: expected text or json, got 'xml'" in r.stderr, r.stderr
    assert "test failed" in r.stderr
    r = run_cli(["-t", "-c", write_config(tmp_path / "d.yaml", "log_format: [json]\n")],
                san_dir)
    assert r.returncode == 1 and "d.yaml:1:13: log_format:" in r.stderr, r.stderr


# ------------------------------------------------------------------ -T

def readme_keys():
    """The keys of README's configuration reference table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Configuration reference"):]
    table = table[:table.index("\n## ", 1)]
    return re.findall(r"^\| `([a-z_]+)` \|", table, re.M)


def rich_config(tmp_path, port):
    cfg = base_config(tmp_path, port, workers=3, log_format="json", log_level="debug",
                      max_header_size="1000", max_message_size="3k", close_timeout="1500ms",
                      idle_timeout="90", ping_interval="0", drain_spread="0",
                      allowed_origins=["https://a.example", "*"], subprotocols=["chat", "x:y"],
                      worker_cpu_affinity="auto", reload_handoff="on",
                      user=pwd.getpwuid(os.getuid()).pw_name,
                      pid_file=str(tmp_path / 'odd "name" #1.pid'))
    cfg["routes"] = {"/": "echo", "/slow": {"module": "echo", "delay": "250ms"},
                     "/s": {"module": "stream", "interval": "100ms", "size": "1k", "count": 7},
                     "/b": "broadcast"}
    openssl = shutil.which("openssl")
    if openssl:
        pems = []
        for name in ("a", "b"):
            key, pem = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
            subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                            str(pem), "-days", "2", "-subj", f"/CN={name}.test"],
                           check=True, capture_output=True)
            pems.append((str(pem), str(key)))
        cfg["listen"].append({"address": f"[::1]:{port}", "tls": {
            "certificate": pems[0][0], "key": pems[0][1],
            "certificates": [{"certificate": pems[1][0], "key": pems[1][1]}],
            "protocols": ["TLSv1.3"], "session_tickets": "off"}})
    return cfg


def test_T_prints_every_key_and_round_trips(tmp_path, san_dir, free_port):
    cfg = write_config(tmp_path / "c.yaml", rich_config(tmp_path, free_port))
    r = run_cli(["-T", "-c", cfg], san_dir)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr
    first = r.stdout
    doc = yaml.safe_load(first)
    keys = set(doc) | set(re.findall(r"^# ([a-z_]+):", first, re.M))
    missing = [k for k in readme_keys() if k not in keys]
    assert not missing, f"-T leaves out {missing}"
    assert "log_format" in keys and len(readme_keys()) >= 29
    assert doc["worker_processes"] == 3 and doc["log_format"] == "json"
    assert doc["pid_file"] == str(tmp_path / 'odd "name" #1.pid')
    assert doc["allowed_origins"] == ["https://a.example", "*"]
    assert doc["routes"]["/s"] == {"module": "stream", "interval": "100ms", "size": "1k",
                                   "count": 7}
    assert doc["routes"]["/"] == {"module": "echo", "delay": 0}, "defaults filled in"
    assert doc["routes"]["/b"] == {"module": "broadcast", "self": 0}
    assert doc["close_timeout"] == "1500ms" and doc["max_message_size"] == "3k"
    if shutil.which("openssl"):
        tls = doc["listen"][1]["tls"]
        assert set(tls) == {"certificate", "key", "certificates", "protocols", "ciphers",
                            "ciphersuites", "session_tickets", "records"}, tls
        assert tls["records"] == "wsechod", tls
        assert tls["protocols"] == ["TLSv1.3"] and tls["ciphers"] and tls["ciphersuites"]
    dumped = write_config(tmp_path / "dumped.yaml", first)
    r = run_cli(["-t", "-c", dumped], san_dir)
    assert r.returncode == 0, r.stderr
    r = run_cli(["-T", "-c", dumped], san_dir)
    assert r.returncode == 0 and r.stdout == first, (r.stdout, first)


def test_T_of_the_defaults_round_trips(tmp_path, san_dir):
    r = run_cli(["-T", "-c", write_config(tmp_path / "empty.yaml", "")], san_dir)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["listen"] == ["127.0.0.1:8080"] and doc["log_format"] == "text"
    assert doc["error_log"] == "stderr" and doc["shutdown_timeout"] == "10s"
    assert "# user: " in r.stdout and "user" not in doc
    again = run_cli(["-T", "-c", write_config(tmp_path / "d.yaml", r.stdout)], san_dir)
    assert again.returncode == 0 and again.stdout == r.stdout


def test_T_with_a_bad_config_fails_like_t(tmp_path, san_dir):
    cfg = write_config(tmp_path / "c.yaml", "listen_backlog: 10\nworker_processes: 0\n")
    r = run_cli(["-T", "-c", cfg], san_dir)
    t = run_cli(["-t", "-c", cfg], san_dir)
    assert r.returncode == t.returncode == 1
    assert r.stdout == ""
    assert f"{cfg}:2:19: worker_processes:" in r.stderr and "test failed" in r.stderr
    assert r.stderr == t.stderr


def test_usage_names_T(san_dir):
    r = run_cli(["-h"], san_dir)
    assert r.returncode == 0 and re.search(r"^  -T ", r.stdout, re.M), r.stdout
