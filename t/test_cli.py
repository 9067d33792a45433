"""Command line: -h, -v, unknown options, -s without a running master,
start-up failures."""

import re
import socket
import subprocess

import pytest

from conftest import BIN, base_config, run_cli, sanitizer_env, write_config


def test_help_prints_usage_on_stdout(san_dir):
    r = run_cli(["-h"], san_dir)
    assert r.returncode == 0, r
    assert "Usage" in r.stdout
    # the usage names the options of the contract
    for opt in ("-c", "-t", "-s", "-h", "-v"):
        assert opt in r.stdout


def test_version(san_dir):
    r = run_cli(["-v"], san_dir)
    assert r.returncode == 0, r
    assert re.fullmatch(r"wsechod/\d+\.\d+\.\d+\n?", r.stdout), repr(r.stdout)


@pytest.mark.parametrize("args", [["-x"], ["--bogus"], ["-q", "-c", "x.yaml"]])
def test_unknown_option_prints_usage_on_stderr_exit_2(san_dir, args):
    r = run_cli(args, san_dir)
    assert r.returncode == 2, r
    assert "Usage" in r.stderr
    assert "Usage" not in r.stdout


def test_s_without_pid_file_says_not_running(tmp_path, san_dir, free_port):
    cfg = write_config(tmp_path / "c.yaml", base_config(tmp_path, free_port))
    assert not (tmp_path / "wsechod.pid").exists()
    for sig in ("stop", "reload", "quit", "reopen"):
        r = run_cli(["-s", sig, "-c", cfg], san_dir)
        assert r.returncode == 1, (sig, r)
        assert "not running" in r.stderr, (sig, r.stderr)


def test_s_with_stale_pid_file_says_not_running(tmp_path, san_dir, free_port):
    cfg = write_config(tmp_path / "c.yaml", base_config(tmp_path, free_port))
    # a pid that certainly belonged to a process that is gone now
    p = subprocess.Popen(["true"])
    p.wait()
    (tmp_path / "wsechod.pid").write_text(f"{p.pid}\n")
    r = run_cli(["-s", "stop", "-c", cfg], san_dir)
    assert r.returncode == 1, r
    assert "not running" in r.stderr


def test_s_with_unknown_signal_name_fails(tmp_path, san_dir, free_port):
    cfg = write_config(tmp_path / "c.yaml", base_config(tmp_path, free_port))
    r = run_cli(["-s", "explode", "-c", cfg], san_dir)
    assert r.returncode != 0, r


def test_start_with_invalid_config_exits_1(tmp_path, san_dir, free_port):
    text = (f"listen: [\"127.0.0.1:{free_port}\"]\n"
            f"pid_file: {tmp_path}/wsechod.pid\n"
            "worker_processes: 0\n")
    cfg = write_config(tmp_path / "c.yaml", text)
    r = subprocess.run([str(BIN), "-c", str(cfg)], capture_output=True, text=True,
                       timeout=15, env=sanitizer_env(san_dir))
    assert r.returncode == 1, r
    assert f"{cfg}:3:19:" in r.stderr
    assert not (tmp_path / "wsechod.pid").exists()


@pytest.mark.parametrize("error_log", ["stderr", "file"])
def test_start_when_port_is_taken_exits_1(tmp_path, san_dir, free_port, error_log):
    # a plain (non-SO_REUSEPORT) listener owned by the test holds the port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", free_port))
    blocker.listen(1)
    try:
        cfg = write_config(tmp_path / "c.yaml",
                           base_config(tmp_path, free_port, workers=1,
                                       error_log="stderr" if error_log == "stderr"
                                       else str(tmp_path / "error.log")))
        r = subprocess.run([str(BIN), "-c", str(cfg)], capture_output=True,
                           text=True, timeout=15, env=sanitizer_env(san_dir))
    finally:
        blocker.close()
    assert r.returncode == 1, r
    assert r.stderr.strip(), "no error message on stderr"
    assert str(free_port) in r.stderr or "address" in r.stderr.lower() \
        or "bind" in r.stderr.lower(), r.stderr
