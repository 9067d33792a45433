"""The measuring tools the README's figures come from: build/wsbench's
scripted modes (--rounds, --signal, --greet, the pings counter) and
scripts/idle-load end to end at a small count. A tool that silently
measured something else would make every table wrong."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, wait_until

WSBENCH = REPO / "build" / "wsbench"
IDLE_LOAD = REPO / "scripts" / "idle-load"


def kv(line):
    return dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)


class Lines:
    """A wsbench process with its stdout read line by line."""

    def __init__(self, args):
        self.proc = subprocess.Popen([str(WSBENCH)] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def expect(self, prefix, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return kv(line)
        raise AssertionError(f"no {prefix} line from wsbench; stderr: {self.proc.stderr.read()[-2000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module", autouse=True)
def built():
    subprocess.run(["make", "-s", "build/wsbench"], cwd=REPO, check=True, timeout=300)


def test_rounds_start_on_signal_and_are_measured_apart(server_factory):
    srv = server_factory(workers=1, release=True)
    b = Lines(["-q", "-m", "echo", "-c", "10", "-d", "1", "-w", "0", "--rounds", "2", "--signal",
               "--sources", "0", f"ws://127.0.0.1:{srv.port}/"])
    try:
        assert b.expect("READY")["open"] == "10"
        time.sleep(1.5)  # quiet until told: nothing may be measured yet
        os.kill(b.proc.pid, signal.SIGUSR1)
        r1 = b.expect("RESULT")
        os.kill(b.proc.pid, signal.SIGUSR1)
        r2 = b.expect("RESULT")
        assert b.proc.wait(20) == 0
    finally:
        b.stop()
    assert (r1["round"], r2["round"]) == ("1", "2")
    m1, m2 = int(r1["msgs"]), int(r2["msgs"])
    assert m1 > 1000 and m2 > 1000
    # Each window counts its own echoes: one that also counted the first
    # window's would be about twice it.
    assert 0.4 < m2 / m1 < 1.6, (m1, m2)
    assert r2["errors"] == "0"


def test_idle_greets_answers_pings_and_holds_until_signal(server_factory):
    srv = server_factory(workers=1, release=True, ping_interval="1s", idle_timeout="10s")
    b = Lines(["-q", "-m", "idle", "-c", "50", "-d", "60", "--greet", "--signal", "--poke", "-1",
               "--sources", "0", f"ws://127.0.0.1:{srv.port}/"])
    try:
        ready = b.expect("READY")
        assert (ready["open"], ready["greeted"], ready["errors"]) == ("50", "50", "0")
        time.sleep(3.5)
        os.kill(b.proc.pid, signal.SIGUSR1)
        r = b.expect("RESULT", timeout=30)
        assert b.proc.wait(20) == 0
    finally:
        b.stop()
    assert r["greet_ok"] == "50" and r["poke_ok"] == "50" and r["errors"] == "0"
    # Silent for 1 s means a ping: every connection got at least two in 3.5 s
    # and, having answered them, was not closed for idleness.
    assert int(r["pings"]) >= 100, r["pings"]
    assert float(r["duration"]) < 30, "the hold did not end at the signal"


def idle_load(*extra):
    out = subprocess.run([sys.executable, str(IDLE_LOAD), "--conns", "3000", "--steps", "1000",
                          "--active", "20", "--active-secs", "1", "--quiet-secs", "0.5",
                          "--per-process", "1000", "--timeout", "120", *extra],
                         capture_output=True, text=True, timeout=180)
    return out.returncode, out.stdout + out.stderr


def test_idle_load_small_run_reports_every_step():
    rc, text = idle_load("--netns", "off")
    assert rc == 0, text[-3000:]
    assert "open: 3,000 of 3,000" in text and "greeted 3,000" in text
    assert "poke: 3,000 of 3,000 echoed; server exit status 0" in text
    for row in ("| 0 |", "| 1,000 |", "| 3,000 |", "| 0 (again, after) |"):
        assert row in text, row
    # Three idle wsbench processes of 1,000 and workers to hold them.
    assert "3 idle wsbench processes" in text


def test_idle_load_in_its_own_network_namespace():
    before = open("/proc/sys/net/ipv4/tcp_child_ehash_entries").read()
    rc, text = idle_load("--netns", "on")
    assert rc == 0, text[-3000:]
    assert "(the run network namespace of its own)" in text
    assert "poke: 3,000 of 3,000 echoed" in text
    # The sysctl that sized the namespace's hash is the machine's again.
    assert open("/proc/sys/net/ipv4/tcp_child_ehash_entries").read() == before
