"""`wsechod -t -c FILE`: valid configs pass, invalid ones name FILE:LINE:COL."""

import re

import pytest

from conftest import REPO, run_cli, write_config

HEAD = 'listen: ["127.0.0.1:{port}"]\npid_file: {tmp}/wsechod.pid\n'  # lines 1-2


def check(tmp_path, san_dir, text, name="c.yaml"):
    path = write_config(tmp_path / name, text)
    return path, run_cli(["-t", "-c", path], san_dir)


def assert_ok(path, r):
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert f"wsechod: configuration file {path} test is successful" in r.stderr, r.stderr
    assert "failed" not in r.stderr


def assert_failed_at(path, r, line, col=None):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"wsechod: configuration file {path} test failed" in r.stderr, r.stderr
    assert "successful" not in r.stderr
    if col is None:
        pat = re.escape(f"{path}:{line}:") + r"\d+: \S"
    else:
        pat = re.escape(f"{path}:{line}:{col}:") + r" \S"
    assert re.search(pat, r.stderr), f"expected {path}:{line}:{col}: in {r.stderr!r}"
    # the location line comes before the summary line
    loc = re.search(re.escape(f"{path}:{line}:"), r.stderr).start()
    assert loc < r.stderr.index("test failed")


FULL = """\
worker_processes: 2          # integer 1..512 or "auto"
listen: ["127.0.0.1:{port}"]
pid_file: {tmp}/wsechod.pid
error_log: {tmp}/error.log
log_level: info
worker_connections: 10240
shutdown_timeout: 1s
close_timeout: 1s
handshake_timeout: 10s
max_header_size: 8k
max_message_size: 16m
max_pending_output: 1m
listen_backlog: 511
routes:
  /: echo
  /echo: echo
"""

VALID = {
    "full_example": FULL,
    "empty_mapping": "{{}}\n",
    "only_listen": 'listen: ["127.0.0.1:{port}"]\n',
    "auto_workers": HEAD + "worker_processes: auto\n",
    "listen_single_string": 'listen: "127.0.0.1:{port}"\n',
    "listen_block_list_ipv6_and_any": "listen:\n  - \"[::1]:{port}\"\n  - \"*:{port}\"\n",
    "bounds_low": HEAD + "worker_processes: 1\nworker_connections: 1\n"
                         "max_header_size: 256\nshutdown_timeout: 0\n",
    "bounds_high": HEAD + "worker_processes: 512\nworker_connections: 1000000\n"
                          "max_header_size: 1m\n",
    "durations_and_sizes": HEAD + "shutdown_timeout: 500ms\nclose_timeout: 2\n"
                                  "handshake_timeout: 2m\nmax_message_size: 1024\n"
                                  "max_pending_output: 64k\nmax_header_size: 4096\n",
    "all_log_levels_error": HEAD + "log_level: error\nerror_log: stderr\n",
    "log_level_debug": HEAD + "log_level: debug\n",
    "log_level_notice": HEAD + "log_level: notice\n",
    "log_level_warn": HEAD + "log_level: warn\n",
    "routes_with_echo_only": HEAD + "routes:\n  /a/b: echo\n",
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_config(tmp_path, san_dir, free_port, name):
    text = VALID[name].format(port=free_port, tmp=tmp_path)
    path, r = check(tmp_path, san_dir, text)
    assert_ok(path, r)


def test_shipped_config_is_valid(san_dir):
    conf = REPO / "conf" / "wsechod.yaml"
    if not conf.exists():
        pytest.skip("no conf/wsechod.yaml")
    r = run_cli(["-t", "-c", conf], san_dir)
    assert_ok(conf, r)


# (text after substitution, line, col) -- col is the 1-based column of the
# offending node (value for bad values, key for bad keys).
INVALID = {
    "workers_sequence": (HEAD + "worker_processes: [1]\n", 3, 19),
    "workers_word": (HEAD + "worker_processes: abc\n", 3, 19),
    "workers_zero": (HEAD + "worker_processes: 0\n", 3, 19),
    "workers_huge": (HEAD + "worker_processes: 100000\n", 3, 19),
    "workers_513": (HEAD + "worker_processes: 513\n", 3, 19),
    "workers_value_on_next_line": (HEAD + "worker_processes:\n    7000\n", 4, 5),
    "listen_bad_ipv4": ('listen: ["300.1.1.1:80"]\n', 1, 10),
    "listen_no_port": ('listen: ["127.0.0.1"]\n', 1, 10),
    "listen_port_too_big": ('listen: ["127.0.0.1:99999"]\n', 1, 10),
    "listen_second_item_bad": ('pid_file: {tmp}/p.pid\nlisten:\n  - "127.0.0.1:{port}"\n'
                               '  - "127.0.0.1:99999"\n', 4, 5),
    "listen_single_string_bad": ('listen: "300.1.1.1:80"\n', 1, 9),
    "listen_mapping": ("listen: {{a: 1}}\n", 1, 9),
    "unknown_key": (HEAD + "worker_procs: 2\n", 3, 1),
    "unknown_key_late": (HEAD + "log_level: info\nlog_levels: info\n", 4, 1),
    "log_level_bad": (HEAD + "log_level: loud\n", 3, 12),
    "duration_bad_suffix": (HEAD + "shutdown_timeout: 5x\n", 3, 19),
    "duration_sequence": (HEAD + "close_timeout: [1]\n", 3, 16),
    "size_bad": (HEAD + "max_message_size: lots\n", 3, 19),
    "header_size_too_small": (HEAD + "max_header_size: 100\n", 3, 18),
    "header_size_too_big": (HEAD + "max_header_size: 2m\n", 3, 18),
    "worker_connections_zero": (HEAD + "worker_connections: 0\n", 3, 21),
    "worker_connections_too_big": (HEAD + "worker_connections: 1000001\n", 3, 21),
    "route_unknown_module": (HEAD + "routes:\n  /: echo\n  /x: nope\n", 5, 7),
    "route_without_slash": (HEAD + "routes:\n  /: echo\n  echo: echo\n", 5, 3),
    "routes_not_mapping": (HEAD + "routes: [echo]\n", 3, 9),
    "top_level_sequence": ("- a\n- b\n", 1, 1),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_reports_line_and_column(tmp_path, san_dir, free_port, name):
    text, line, col = INVALID[name]
    path, r = check(tmp_path, san_dir, text.format(port=free_port, tmp=tmp_path))
    assert_failed_at(path, r, line, col)


# YAML syntax errors: libyaml decides the exact column, the line is certain.
SYNTAX = {
    "bad_indent": ("worker_processes: 2\nlog_level: info\n  bad: indent\n", 3),
    "mapping_in_value": ("worker_processes: 2\nlog_level: info: bad\n", 2),
    "sequence_after_mapping": ("worker_processes: 2\n- b\n", 2),
}


@pytest.mark.parametrize("name", sorted(SYNTAX))
def test_yaml_syntax_error_reports_line(tmp_path, san_dir, name):
    text, line = SYNTAX[name]
    path, r = check(tmp_path, san_dir, text)
    assert_failed_at(path, r, line)


def test_missing_config_file_fails(tmp_path, san_dir):
    path = tmp_path / "does-not-exist.yaml"
    r = run_cli(["-t", "-c", path], san_dir)
    assert r.returncode == 1, r
    assert "failed" in r.stderr
    assert "successful" not in r.stderr
