"""Zero-disconnect reload and binary upgrade: open WebSockets move to the new
workers (or the new master) as they are, on the same TCP connection."""

import os
import shutil
import signal
import time

import pytest

import conftest
from conftest import OP_TEXT, RawWS, children, encode_frame, pid_alive, run_async, wait_until, ws_connect


def handoff_server(server_factory, workers=2, **kw):
    # None removes the key: handoff is what the product does by default.
    return server_factory(workers=workers, reload_handoff=None, **kw)


def reload_and_wait(srv, gen):
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(f"generation {gen} ready", what=f"generation {gen} ready")


def test_connection_survives_three_reloads_on_the_same_tcp_connection(server_factory):
    srv = handoff_server(server_factory, shutdown_timeout="10s")

    async def scenario():
        async with ws_connect(srv.port) as ws:
            port = ws.local_address[1]
            await ws.send("before")
            assert await ws.recv() == "before"
            first_owner = srv.conn_owner(port)
            owners = {first_owner}
            for gen in (2, 3, 4):
                reload_and_wait(srv, gen)
                # The owner changes to a worker of the new generation...
                owner = wait_until(lambda: (lambda o: o if srv.workers().get(o, (0, 0))[1] == gen
                                            else None)(srv.conn_owner(port)),
                                   10, what=f"connection owned by generation {gen}")
                owners.add(owner)
                msg = f"after reload {gen - 1}"
                await ws.send(msg)
                assert await ws.recv() == msg
                assert ws.local_address[1] == port
            # ...while the old workers are gone: nothing of the first one serves it.
            wait_until(lambda: not pid_alive(first_owner), 10, what="first owner exited")
            await ws.send("x" * 70000)
            assert await ws.recv() == "x" * 70000
            assert len(owners) == 4, owners
            assert not ws.closed
    run_async(scenario(), timeout=60)
    log = srv.log_text()
    assert "handing 1 connections" in log
    assert "1012" not in log


def test_slow_message_one_byte_at_a_time_across_a_reload_arrives_intact(server_factory):
    srv = handoff_server(server_factory, workers=1, shutdown_timeout="10s")
    ws = RawWS(srv.port)
    assert ws.echo(b"warm-up") == b"warm-up"
    payload = bytes(range(32, 127)) * 2
    frame = encode_frame(OP_TEXT, payload)
    for i, b in enumerate(frame):
        ws.sock.sendall(bytes([b]))
        if i == len(frame) // 2:
            srv.send_signal(signal.SIGHUP)
        time.sleep(0.01)
    assert ws.recv_message(timeout=10) == (OP_TEXT, payload)
    srv.wait_log("generation 2 ready")
    # Handed over once the message was complete: the new worker echoes now.
    gen2 = srv.wait_workers(1, gen=2)
    wait_until(lambda: srv.conn_owner(ws.sock.getsockname()[1]) in gen2, 10,
               what="connection handed to generation 2")
    assert ws.echo(b"after") == b"after"
    ws.close()


def test_bytes_waiting_in_the_old_worker_travel_with_the_connection(server_factory):
    """A frame's first bytes read by the old worker must reach the new one."""
    srv = handoff_server(server_factory, workers=1, shutdown_timeout="10s")
    ws = RawWS(srv.port)
    assert ws.echo(b"a") == b"a"
    frame = encode_frame(OP_TEXT, b"split header")
    ws.sock.sendall(frame[:1])           # one byte of a header: nothing in flight
    time.sleep(0.2)
    reload_and_wait(srv, 2)
    gen2 = srv.wait_workers(1, gen=2)
    wait_until(lambda: srv.conn_owner(ws.sock.getsockname()[1]) in gen2, 10,
               what="connection handed to generation 2")
    ws.sock.sendall(frame[1:])
    assert ws.recv_message() == (OP_TEXT, b"split header")
    ws.close()


def test_handoff_off_still_closes_with_1012(server_factory):
    srv = server_factory(workers=1, reload_handoff="off", shutdown_timeout="1s",
                         drain_spread="0")
    ws = RawWS(srv.port)
    assert ws.echo(b"x") == b"x"
    srv.send_signal(signal.SIGHUP)
    code, reason, _ = ws.recv_close(timeout=10)
    assert code == 1012, (code, reason)
    assert "handing" not in srv.log_text()


def test_a_route_the_new_config_drops_closes_with_1012(server_factory):
    srv = handoff_server(server_factory, workers=1, routes={"/": "echo", "/gone": "echo"})
    kept, gone = RawWS(srv.port, path="/"), RawWS(srv.port, path="/gone")
    assert kept.echo(b"k") == b"k" and gone.echo(b"g") == b"g"
    cfg = dict(srv.cfg, routes={"/": "echo"})
    srv.write_config(cfg)
    reload_and_wait(srv, 2)
    code, reason, _ = gone.recv_close(timeout=10)
    assert (code, reason) == (1012, b"route removed by reload")
    assert kept.echo(b"still here") == b"still here"
    kept.close()


def test_new_limits_apply_to_handed_over_connections(server_factory):
    srv = handoff_server(server_factory, workers=1, max_message_size="64k")
    ws = RawWS(srv.port)
    assert ws.echo(b"y" * 1000) == b"y" * 1000
    srv.write_config(dict(srv.cfg, max_message_size="512"))
    reload_and_wait(srv, 2)
    gen2 = srv.wait_workers(1, gen=2)
    wait_until(lambda: srv.conn_owner(ws.sock.getsockname()[1]) in gen2, 10,
               what="connection handed to generation 2")
    ws.send_frame(OP_TEXT, b"y" * 1000)
    assert ws.recv_close()[0] == 1009


# --------------------------------------------------------------------------
# binary upgrade
# --------------------------------------------------------------------------

def read_pid(path):
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stop_master(pid):
    """Stops a master that is not our child (an upgrade's new master)."""
    kids = children(pid)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid) and not any(pid_alive(k) for k in kids), 15,
               what=f"master {pid} and its workers gone")


def test_binary_upgrade_to_the_same_binary_keeps_connections(server_factory):
    srv = handoff_server(server_factory, workers=2)
    old = srv.pid
    new = None

    async def scenario():
        nonlocal new
        async with ws_connect(srv.port) as ws:
            port = ws.local_address[1]
            await ws.send("before upgrade")
            assert await ws.recv() == "before upgrade"
            srv.send_signal(signal.SIGUSR2)
            new = wait_until(lambda: (lambda p: p if p and p != old else None)(read_pid(srv.pid_file)),
                             15, what="pid file naming the new master")
            assert srv.wait_exit(15) == 0  # the old master leaves once all is handed over
            assert not any(pid_alive(p) for p in srv.seen)
            await ws.send("after upgrade")
            assert await ws.recv() == "after upgrade"
            assert ws.local_address[1] == port and not ws.closed
            owners = children(new)
            assert len(owners) == 2
    try:
        run_async(scenario(), timeout=60)
        log = srv.log_text()
        assert "binary upgrade: master" in log and "serves" in log
        # New connections go to the new master's workers.
        c = RawWS(srv.port)
        assert c.echo(b"new client") == b"new client"
        c.close()
    finally:
        if new and pid_alive(new):
            stop_master(new)


def test_failed_new_binary_leaves_the_old_master_serving(server_factory, tmp_path, monkeypatch):
    copy, real = tmp_path / "wsechod-copy", conftest.BIN
    shutil.copy2(real, copy)
    monkeypatch.setattr(conftest, "BIN", copy)
    srv = handoff_server(server_factory, workers=1, upgrade_timeout="5s")
    ws = RawWS(srv.port)
    assert ws.echo(b"one") == b"one"
    # A broken release lands where the binary was (rename, as installers do).
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'broken build' >&2\nexit 1\n")
    broken.chmod(0o755)
    os.replace(broken, copy)
    srv.send_signal(signal.SIGUSR2)
    srv.wait_log("binary upgrade failed", what="upgrade failure logged")
    assert read_pid(srv.pid_file) == srv.pid and pid_alive(srv.pid)
    assert ws.echo(b"still served") == b"still served"
    c = RawWS(srv.port)
    assert c.echo(b"new client") == b"new client"
    c.close()
    # A reload still works afterwards, and so does a fixed release.
    fixed = tmp_path / "fixed"
    shutil.copy2(real, fixed)
    os.replace(fixed, copy)
    srv.send_signal(signal.SIGUSR2)
    new = wait_until(lambda: (lambda p: p if p and p != srv.pid else None)(read_pid(srv.pid_file)),
                     15, what="pid file naming the new master")
    try:
        assert srv.wait_exit(15) == 0
        assert ws.echo(b"upgraded") == b"upgraded"
        ws.close()
    finally:
        stop_master(new)


def test_upgrade_via_command_line(server_factory):
    srv = handoff_server(server_factory, workers=1)
    ws = RawWS(srv.port)
    assert ws.echo(b"cli") == b"cli"
    r = conftest.run_cli(["-c", str(srv.config_path), "-s", "upgrade"], srv.san_dir)
    assert r.returncode == 0, r
    new = wait_until(lambda: (lambda p: p if p and p != srv.pid else None)(read_pid(srv.pid_file)),
                     15, what="pid file naming the new master")
    try:
        assert srv.wait_exit(15) == 0
        assert ws.echo(b"cli after") == b"cli after"
        ws.close()
    finally:
        stop_master(new)


def test_rapid_reloads_lose_no_connection_in_transit(server_factory):
    """Generation 1 hands to 2 while 2 already hands to 3...: a worker must
    not exit while a connection may still be on its way to it."""
    srv = handoff_server(server_factory, workers=2, shutdown_timeout="10s")
    clients = [RawWS(srv.port) for _ in range(30)]
    for i, c in enumerate(clients):
        assert c.echo(b"%d" % i) == b"%d" % i
    for _ in range(6):
        srv.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    srv.wait_log("generation 7 ready", what="generation 7 ready")
    wait_until(lambda: all(v[1] == 7 for v in srv.workers(include_draining=True).values()),
               15, what="only generation 7 left")
    for i, c in enumerate(clients):
        assert c.echo(b"after %d" % i) == b"after %d" % i
        c.close()


def test_a_message_that_never_completes_is_drained_with_1012(server_factory):
    srv = handoff_server(server_factory, workers=1, shutdown_timeout="1s", drain_spread="0")
    stuck, fine = RawWS(srv.port), RawWS(srv.port)
    assert stuck.echo(b"s") == b"s" and fine.echo(b"f") == b"f"
    stuck.send_frame(OP_TEXT, b"first fragment", fin=False)  # and nothing more
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.send_signal(signal.SIGHUP)
    code, _, _ = stuck.recv_close(timeout=10)
    assert code == 1012
    assert time.monotonic() - t0 >= 0.8
    assert fine.echo(b"handed over") == b"handed over"
    fine.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_unprivileged_workers_hand_over_more_descriptors_than_their_limit(server_factory):
    """A user without CAP_SYS_RESOURCE may have no more descriptors in
    flight over unix sockets than its RLIMIT_NOFILE (sendmsg fails with
    ETOOMANYREFS): four workers handing 140 connections each to inboxes the
    new workers have not read yet pass 200 at once. That is a full inbox to
    retry, not a dead worker to give up on (which closed a third of them
    with 1012)."""
    srv = handoff_server(server_factory, workers=4, user="nobody", worker_rlimit_nofile=200,
                         worker_connections=180, ping_interval=0, idle_timeout=0,
                         shutdown_timeout="10s")
    clients = [RawWS(srv.port) for _ in range(560)]
    for i, c in enumerate(clients):
        assert c.echo(b"%d" % i) == b"%d" % i
    old = set(srv.workers())
    reload_and_wait(srv, 2)
    wait_until(lambda: not (set(srv.workers(include_draining=True)) & old), 20,
               what="old workers gone")
    for i, c in enumerate(clients):
        assert c.echo(b"after %d" % i) == b"after %d" % i
        c.close()
    assert "inbox failed" not in srv.log_path.read_text()
