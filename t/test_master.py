"""Master/worker process model: listeners, distribution, respawn, reload,
graceful/fast stop, -s via the pid file, master death."""

import os
import signal
import time

import pytest
import yaml

from conftest import (RawWS, cmdline, children, listen_inodes, pick_free_port,
                      pid_alive, run_cli, socket_inodes, wait_until)


def slots_ok(slots, n):
    """Worker slots are n distinct numbers: 0..n-1 (or 1..n)."""
    s = sorted(slots)
    return s == list(range(n)) or s == list(range(1, n + 1))


def listeners_of(pid, port):
    return socket_inodes(pid) & listen_inodes(port)


def open_on_workers(srv, want_pids, limit=60):
    """Open raw WebSockets until every pid in want_pids owns at least one.
    Returns {pid: [RawWS, ...]} (all opened connections, by owner)."""
    by_owner = {}
    for _ in range(limit):
        ws = RawWS(srv.port)
        by_owner.setdefault(srv.conn_owner(ws.local_port), []).append(ws)
        if all(by_owner.get(p) for p in want_pids):
            return by_owner
    for conns in by_owner.values():
        for c in conns:
            c.abort()
    raise AssertionError(f"{limit} connections did not reach workers {want_pids}: "
                         f"{ {p: len(c) for p, c in by_owner.items()} }")


def close_all(by_owner):
    for conns in by_owner.values():
        for c in conns:
            c.abort()


def wait_gone(pids, timeout, what="processes to exit"):
    pids = list(pids)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout,
               what=f"{what} {pids}")


# ------------------------------------------------------------------ listeners

@pytest.mark.parametrize("n", [2, 3])
def test_each_worker_has_its_own_listening_socket(server_factory, n):
    srv = server_factory(workers=n)
    w = srv.workers()
    assert len(w) == n
    assert slots_ok([v[0] for v in w.values()], n), w
    assert len({v[1] for v in w.values()}) == 1, f"mixed generations: {w}"
    for pid in w:
        title = cmdline(pid)
        slot, gen, _ = w[pid]
        assert f"wsechod: worker process #{slot} gen {gen}" in title
        assert "draining" not in title
    assert "wsechod: master process" in cmdline(srv.pid)
    # one SO_REUSEPORT listening socket per slot, each worker holds exactly its own
    all_listen = listen_inodes(srv.port)
    assert len(all_listen) == n, f"expected {n} listening sockets, got {all_listen}"
    per_worker = {pid: listeners_of(pid, srv.port) for pid in w}
    for pid, inodes in per_worker.items():
        assert len(inodes) == 1, f"worker {pid} holds listeners {inodes}"
    assert set().union(*per_worker.values()) == all_listen


def test_two_listen_addresses_ipv4_and_ipv6(server_factory, free_port):
    port2 = pick_free_port()
    srv = server_factory(workers=2, listen=[f"127.0.0.1:{free_port}", f"[::1]:{port2}"])
    w = srv.workers()
    assert len(listen_inodes(port2)) == 2
    for pid in w:
        assert len(listeners_of(pid, free_port)) == 1
        assert len(listeners_of(pid, port2)) == 1
    ws = RawWS(port2, host="::1")
    assert ws.echo("over ipv6") == b"over ipv6"
    assert ws.close() == 1000


def test_connections_spread_over_workers(server_factory):
    srv = server_factory(workers=2)
    workers = set(srv.workers())
    conns = [RawWS(srv.port) for _ in range(40)]
    try:
        by_port = srv.conn_owners(c.local_port for c in conns)
        owners = [by_port[c.local_port] for c in conns]
        assert set(owners) <= workers, (owners, workers)
        counts = {p: owners.count(p) for p in workers}
        assert all(v >= 1 for v in counts.values()), f"not spread: {counts}"
        for i, c in enumerate(conns):
            assert c.echo(f"conn {i}") == f"conn {i}".encode()
    finally:
        for c in conns:
            c.abort()


# ------------------------------------------------------------------ respawn

def test_killed_worker_is_respawned_in_same_slot(server_factory):
    srv = server_factory(workers=2)
    before = srv.workers()
    victim, survivor = sorted(before)
    by_owner = open_on_workers(srv, [victim, survivor])
    try:
        victim_slot = before[victim][0]
        victim_listener = listeners_of(victim, srv.port)
        assert len(victim_listener) == 1

        os.kill(victim, signal.SIGKILL)

        def replaced():
            w = srv.workers()
            if victim in w or len(w) != 2:
                return None
            return w
        after = wait_until(replaced, 10, what="replacement worker")
        assert after[survivor] == before[survivor], "the other worker changed"
        repl = [p for p, v in after.items() if v[0] == victim_slot]
        assert len(repl) == 1 and repl[0] != victim, after
        repl = repl[0]
        assert f"#{victim_slot} " in cmdline(repl)

        line = srv.wait_log(lambda l: f"worker {victim}" in l and "killed by signal 9" in l,
                            what=f"'worker {victim} ... killed by signal 9'")
        assert line

        # connections on the surviving worker are untouched
        for i, c in enumerate(by_owner[survivor]):
            assert c.echo(f"survivor {i}") == f"survivor {i}".encode()
        # connections of the killed worker are gone
        for c in by_owner[victim]:
            assert c.wait_eof(3.0), "connection of killed worker still open"

        # the new worker serves the same slot's listening socket
        wait_until(lambda: listeners_of(repl, srv.port) == victim_listener, 5,
                   what="replacement holding the slot's listening socket")
        more = open_on_workers(srv, [repl])
        try:
            for conns in more.values():
                for c in conns:
                    assert c.echo("new") == b"new"
        finally:
            close_all(more)
    finally:
        close_all(by_owner)


def test_quick_repeated_kills_back_off(server_factory):
    srv = server_factory(workers=1)
    pid, (slot, _gen, _d) = next(iter(srv.workers().items()))
    delays = []
    for _ in range(3):
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        new = wait_until(lambda: [p for p in srv.workers() if p != pid], 15,
                         interval=0.01, what="respawned worker")
        delays.append(time.monotonic() - t0)
        pid = new[0]
        assert srv.workers()[pid][0] == slot
    srv.wait_log("respawning", what="respawn back-off log line")
    # a back-off: respawning a slot that keeps dying gets slower
    assert delays[-1] > delays[0], delays
    assert delays[-1] >= 0.3, delays
    for old in list(srv.seen):
        if old != pid:
            assert not pid_alive(old)
    srv.wait_ready(1, timeout=10)
    ws = RawWS(srv.port)
    assert ws.echo("after respawns") == b"after respawns"
    ws.close()


# ------------------------------------------------------------------ reload

@pytest.mark.parametrize("before_n,after_n", [(2, 3), (3, 1)])
def test_reload_changes_worker_count_and_keeps_open_websocket(server_factory,
                                                              before_n, after_n):
    srv = server_factory(workers=before_n, shutdown_timeout="30s")
    old = srv.workers()
    g1 = next(iter(old.values()))[1]
    c = RawWS(srv.port)
    assert c.echo("before reload") == b"before reload"
    owner = srv.conn_owner(c.local_port)
    assert owner in old

    srv.write_config(dict(srv.cfg, worker_processes=after_n))
    srv.send_signal(signal.SIGHUP)

    def new_gen():
        w = srv.workers()
        if len(w) == after_n and all(v[1] > g1 for v in w.values()):
            return w
        return None
    new = wait_until(new_gen, 10, what=f"{after_n} workers of a new generation")
    g2 = next(iter(new.values()))[1]
    assert all(v[1] == g2 for v in new.values()), new
    assert slots_ok([v[0] for v in new.values()], after_n), new
    for pid in new:
        assert pid not in old
        assert f"gen {g2}" in cmdline(pid)
    # every new worker holds exactly its own slot's listening socket
    new_listeners = [listeners_of(pid, srv.port) for pid in new]
    assert all(len(li) == 1 for li in new_listeners), new_listeners
    assert len(set().union(*new_listeners)) == after_n

    # the old worker holding our WebSocket drains: title says so, no listener
    wait_until(lambda: "draining" in (cmdline(owner) or ""), 5,
               what=f"'draining' in title of {owner}")
    assert f"gen {g1}" in cmdline(owner)
    wait_until(lambda: not listeners_of(owner, srv.port), 5,
               what="draining worker to close its listener")
    # idle old workers have nothing to drain and go away
    wait_gone([p for p in old if p != owner], 5, "idle old workers")

    # the WebSocket opened before the reload is still served
    for i in range(3):
        assert c.echo(f"after reload {i}") == f"after reload {i}".encode()

    # new connections go to the new generation
    for _ in range(10):
        n = RawWS(srv.port)
        try:
            assert srv.conn_owner(n.local_port) in new
            assert n.echo("new gen") == b"new gen"
        finally:
            n.close()

    # once its last WebSocket closes the draining worker exits
    assert c.close(1000) == 1000
    wait_gone([owner], 5, "drained worker")
    assert set(srv.workers()) == set(new)


def test_reload_drain_sends_1012_after_shutdown_timeout(server_factory):
    srv = server_factory(workers=1, shutdown_timeout="1s")
    c = RawWS(srv.port)
    owner = srv.conn_owner(c.local_port)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGHUP)
    assert c.echo("right after HUP") == b"right after HUP"
    wait_until(lambda: [p for p in srv.workers() if p != owner], 10,
               what="new generation worker")
    assert c.echo("while draining") == b"while draining"
    code, _reason, msgs = c.recv_close(timeout=8)
    elapsed = time.monotonic() - t0
    assert code == 1012
    assert msgs == []
    assert elapsed >= 0.8, f"closed after {elapsed:.2f}s, before shutdown_timeout"
    c.send_frame(8, b"\x03\xf4")  # our close reply (1012)
    c.wait_eof(3)
    c.abort()
    wait_gone([owner], 5, "drained worker")


@pytest.mark.parametrize("bad_line,col", [("worker_processes: 0", 19),
                                          ("no_such_key: 1", 1)])
def test_reload_with_invalid_config_changes_nothing(server_factory, bad_line, col):
    srv = server_factory(workers=2)
    before = srv.workers()
    c = RawWS(srv.port)
    good_cfg = dict(srv.cfg)
    cfg = dict(srv.cfg)
    cfg.pop("worker_processes")
    text = yaml.safe_dump(cfg, sort_keys=False)
    bad_lineno = text.count("\n") + 1
    srv.config_path.write_text(text + bad_line + "\n")
    srv.send_signal(signal.SIGHUP)

    line = srv.wait_log("reload failed", what="'reload failed'")
    assert f"{srv.config_path}:{bad_lineno}:{col}:" in line, line
    time.sleep(0.3)
    assert srv.workers() == before
    assert c.echo("after failed reload") == b"after failed reload"
    n = RawWS(srv.port)
    assert n.echo("new conn") == b"new conn"
    n.close()

    # a later valid reload still works
    srv.write_config(dict(good_cfg, worker_processes=1))
    srv.send_signal(signal.SIGHUP)
    g1 = next(iter(before.values()))[1]
    wait_until(lambda: len(srv.workers()) == 1 and
               all(v[1] > g1 for v in srv.workers().values()), 10,
               what="valid reload after a failed one")
    assert c.echo("still") == b"still"
    c.close()


# ------------------------------------------------------------------ stop

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["TERM", "QUIT"])
def test_graceful_stop_drains_with_1001(server_factory, sig):
    srv = server_factory(workers=2, shutdown_timeout="1s")
    workers = srv.workers()
    c = RawWS(srv.port)
    owner = srv.conn_owner(c.local_port)
    assert srv.pid_file.read_text().strip() == str(srv.pid)

    t0 = time.monotonic()
    srv.send_signal(sig)
    assert c.echo("right after the signal") == b"right after the signal"
    wait_until(lambda: "draining" in (cmdline(owner) or ""), 0.8,
               what="'draining' in the worker title")
    code, _reason, msgs = c.recv_close(timeout=8)
    elapsed = time.monotonic() - t0
    assert code == 1001
    assert msgs == []
    assert 0.8 <= elapsed <= 6, f"close frame after {elapsed:.2f}s"
    c.send_frame(8, b"\x03\xe9")  # close reply 1001
    c.wait_eof(3)
    c.abort()

    assert srv.wait_exit(10) == 0
    assert not srv.pid_file.exists(), "pid file not removed"
    wait_gone(workers, 3, "workers after stop")


def test_sigquit_graceful_stop_idle(server_factory):
    srv = server_factory(workers=2)
    workers = srv.workers()
    srv.send_signal(signal.SIGQUIT)
    assert srv.wait_exit(10) == 0
    assert not srv.pid_file.exists()
    wait_gone(workers, 3, "workers after SIGQUIT")


def test_sigint_fast_stop(server_factory):
    srv = server_factory(workers=2, shutdown_timeout="30s")
    workers = srv.workers()
    c = RawWS(srv.port)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGINT)
    srv.wait_exit(3)
    assert time.monotonic() - t0 < 3
    wait_gone(workers, 3, "workers after SIGINT")
    assert c.wait_eof(2), "client connection still open after fast stop"
    c.abort()


# ------------------------------------------------------------------ -s

def test_s_reload_and_stop_via_pid_file(server_factory):
    srv = server_factory(workers=2)
    assert srv.pid_file.read_text().strip() == str(srv.pid)
    g1 = next(iter(srv.workers().values()))[1]

    srv.write_config(dict(srv.cfg, worker_processes=1))
    r = run_cli(["-s", "reload", "-c", srv.config_path], srv.san_dir)
    assert r.returncode == 0, r
    wait_until(lambda: len(srv.workers()) == 1 and
               all(v[1] > g1 for v in srv.workers().values()), 10,
               what="new generation after -s reload")
    ws = RawWS(srv.port)
    assert ws.echo("reloaded") == b"reloaded"
    ws.close()

    workers = srv.workers(include_draining=True)
    r = run_cli(["-s", "stop", "-c", srv.config_path], srv.san_dir)
    assert r.returncode == 0, r
    assert srv.wait_exit(10) == 0
    assert not srv.pid_file.exists()
    wait_gone(workers, 3, "workers after -s stop")

    r = run_cli(["-s", "stop", "-c", srv.config_path], srv.san_dir)
    assert r.returncode == 1 and "not running" in r.stderr, r


def test_s_quit_via_pid_file(server_factory):
    srv = server_factory(workers=1)
    r = run_cli(["-s", "quit", "-c", srv.config_path], srv.san_dir)
    assert r.returncode == 0, r
    assert srv.wait_exit(10) == 0
    assert not srv.pid_file.exists()


def test_s_reopen_reopens_error_log(server_factory):
    srv = server_factory(workers=1)
    wait_until(lambda: srv.log_text(), 5, what="something in the error log")
    rotated = srv.log_path.with_name("error.log.1")
    os.rename(srv.log_path, rotated)
    r = run_cli(["-s", "reopen", "-c", srv.config_path], srv.san_dir)
    assert r.returncode == 0, r
    wait_until(srv.log_path.exists, 5, what="error_log re-created by reopen")
    # the master logs into the new file now
    victim = next(iter(srv.workers()))
    rotated_size = rotated.stat().st_size
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(lambda l: f"worker {victim}" in l and "killed by signal 9" in l,
                 what="worker death logged in the reopened log")
    assert f"worker {victim}" not in rotated.read_text()[rotated_size - 1:]
    srv.wait_ready(1)


def test_close_timeout_drops_silent_client(server_factory):
    """After the server's close frame, a client that never answers is
    disconnected about close_timeout later."""
    srv = server_factory(workers=1, shutdown_timeout="200ms", close_timeout="1s")
    c = RawWS(srv.port)
    srv.send_signal(signal.SIGTERM)
    code, _r, _m = c.recv_close(timeout=5)
    t_close = time.monotonic()
    assert code == 1001
    assert c.wait_eof(5), "server never dropped the silent client"
    waited = time.monotonic() - t_close
    assert 0.7 <= waited <= 4, f"dropped {waited:.2f}s after its close frame"
    c.abort()
    assert srv.wait_exit(10) == 0


LOG_RE = (r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z "
          r"\[(debug|info|notice|warn|error)\] (\d+): \S.*$")


def test_log_line_format(server_factory):
    import re
    srv = server_factory(workers=2, log_level="debug")
    victim = next(iter(srv.workers()))
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(lambda l: f"worker {victim}" in l and "killed by signal 9" in l,
                 what="worker death")
    srv.wait_ready(2)
    assert srv.stop() == 0
    lines = srv.log_text().splitlines()
    assert lines
    ours = {srv.pid} | srv.seen
    for line in lines:
        m = re.match(LOG_RE, line)
        assert m, f"bad log line: {line!r}"
        assert int(m.group(2)) in ours, f"unknown pid in {line!r}"


def test_log_level_filters(server_factory):
    import re
    srv = server_factory(workers=1, log_level="error")
    victim = next(iter(srv.workers()))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: [p for p in srv.workers() if p != victim], 10,
               what="respawn")
    ws = RawWS(srv.port)
    ws.echo("x")
    ws.close()
    assert srv.stop() == 0
    for line in srv.log_text().splitlines():
        m = re.match(LOG_RE, line)
        assert m and m.group(1) == "error", f"below log_level error: {line!r}"


# ------------------------------------------------------------------ master death

def test_workers_exit_when_master_is_killed(server_factory):
    srv = server_factory(workers=2, shutdown_timeout="1s")
    workers = srv.workers()
    c = RawWS(srv.port)
    owner = srv.conn_owner(c.local_port)
    srv.proc.kill()
    srv.proc.wait(5)
    # the orphaned worker keeps serving while it drains ...
    assert c.echo("orphan") == b"orphan"
    # ... and all workers exit by themselves
    t0 = time.monotonic()
    try:
        code, _r, _m = c.recv_close(timeout=6)
        c.send_frame(8, b"\x03\xe8")
    except (EOFError, ConnectionError):
        pass
    c.abort()
    wait_gone(workers, 6, "orphaned workers")
    assert owner in workers
    assert time.monotonic() - t0 < 6


def test_listen_as_single_string(server_factory, free_port):
    srv = server_factory(workers=1, listen=f"127.0.0.1:{free_port}")
    assert len(listen_inodes(free_port)) == 1
    ws = RawWS(srv.port)
    assert ws.echo("single string listen") == b"single string listen"
    ws.close()


def test_worker_processes_auto(server_factory):
    srv = server_factory(workers="auto", start=False)
    srv.start(wait=False)
    expected = {os.sysconf("SC_NPROCESSORS_ONLN"), len(os.sched_getaffinity(0))}
    wait_until(lambda: len(srv.workers()) in expected, 10,
               what=f"'auto' workers ({expected} CPUs)")
    srv.wait_ready(len(srv.workers()))


def test_children_are_only_workers(server_factory):
    srv = server_factory(workers=3)
    kids = children(srv.pid)
    assert sorted(kids) == sorted(srv.workers()), [cmdline(k) for k in kids]


# ------------------------------------------------------------------ reload: config changes

def _wait_new_gen(srv, n, g_old, timeout=10):
    def ok():
        w = srv.workers()
        if len(w) == n and all(v[1] > g_old for v in w.values()):
            return w
        return None
    return wait_until(ok, timeout, what=f"{n} workers newer than gen {g_old}")


def test_reload_adds_listen_address(server_factory, free_port):
    srv = server_factory(workers=2)
    g1 = next(iter(srv.workers().values()))[1]
    port2 = pick_free_port()
    srv.write_config(dict(srv.cfg, listen=[f"127.0.0.1:{free_port}",
                                           f"127.0.0.1:{port2}"]))
    srv.send_signal(signal.SIGHUP)
    new = _wait_new_gen(srv, 2, g1)
    wait_until(lambda: len(listen_inodes(port2)) == 2, 5,
               what="listening sockets for the added address")
    for pid in new:
        wait_until(lambda: len(listeners_of(pid, port2)) == 1, 5,
                   what=f"worker {pid} listening on the added port")
        assert len(listeners_of(pid, free_port)) == 1
    for port in (free_port, port2):
        ws = RawWS(port)
        assert ws.echo(f"port {port}") == f"port {port}".encode()
        ws.close()


def test_reload_applies_new_routes_and_limits(server_factory):
    from conftest import http_exchange, ws_request, OP_TEXT
    srv = server_factory(workers=1)
    g1 = next(iter(srv.workers().values()))[1]
    old = RawWS(srv.port, path="/echo")
    srv.write_config(dict(srv.cfg, routes={"/new": "echo"}, max_message_size="1k"))
    srv.send_signal(signal.SIGHUP)
    _wait_new_gen(srv, 1, g1)
    # new connections see the new routes ...
    resp, _eof = http_exchange(srv.port, ws_request(srv.port, path="/echo"))
    assert resp.status == 404, resp
    ws = RawWS(srv.port, path="/new")
    assert ws.echo("new route") == b"new route"
    # ... and the new max_message_size
    ws.send_frame(OP_TEXT, b"x" * 2048)
    code, _r, msgs = ws.recv_close()
    assert code == 1009 and msgs == []
    ws.abort()
    # the connection from before the reload is served by its old worker
    assert old.echo("old") == b"old"
    old.close()


def test_reload_storm_settles(server_factory):
    srv = server_factory(workers=2)
    g1 = next(iter(srv.workers().values()))[1]
    for i in range(5):
        srv.write_config(dict(srv.cfg, worker_processes=1 + i % 3))
        srv.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    final_n = 1 + 4 % 3
    time.sleep(0.3)
    new = _wait_new_gen(srv, final_n, g1)
    gens = {v[1] for v in new.values()}
    assert len(gens) == 1, new
    # all earlier generations go away (nothing to drain)
    wait_until(lambda: set(srv.workers(include_draining=True)) == set(new), 10,
               what="old generations to exit")
    for _ in range(5):
        ws = RawWS(srv.port)
        assert srv.conn_owner(ws.local_port) in new
        assert ws.echo("settled") == b"settled"
        ws.close()
    assert srv.stop() == 0


def test_stop_while_old_generation_drains(server_factory):
    srv = server_factory(workers=2, shutdown_timeout="1s")
    g1 = next(iter(srv.workers().values()))[1]
    c = RawWS(srv.port)
    owner = srv.conn_owner(c.local_port)
    srv.send_signal(signal.SIGHUP)
    _wait_new_gen(srv, 2, g1)
    assert "draining" in cmdline(owner)
    srv.send_signal(signal.SIGTERM)
    code, _r, _m = c.recv_close(timeout=6)
    assert code in (1012, 1001), code
    c.send_frame(8, code.to_bytes(2, "big"))
    c.wait_eof(3)
    c.abort()
    assert srv.wait_exit(10) == 0
    assert not srv.pid_file.exists()
    wait_gone(srv.seen, 3, "all workers")


def test_stop_with_unfinished_handshake(server_factory):
    """A TCP client stuck mid-request does not hold up a graceful stop."""
    import socket
    srv = server_factory(workers=1, shutdown_timeout="1s", handshake_timeout="30s")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    time.sleep(0.1)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    try:
        assert srv.wait_exit(8) == 0
        assert time.monotonic() - t0 < 6
    finally:
        s.close()
        idle.close()
