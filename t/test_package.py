"""Packaging: the man pages, `make install` / `make uninstall`, the systemd
unit (its sandbox, and a full run as an unprivileged user under strace
whose system calls must all pass the unit's filter), and `make deb`:
lintian, `dpkg -i` (again: the binary upgrade of a running master),
`dpkg -r`, `dpkg --purge`.

The packaging tools come from `scripts/install-deps pkg`, which `make test`
runs; without them (pytest by hand) those tests skip."""

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import (RELEASE_BIN, REPO, RawWS, pick_free_port, pid_alive, run_async,
                      run_cli, wait_until, write_config)

MAN8 = REPO / "conf/man/wsechod.8"
MAN5 = REPO / "conf/man/wsechod.yaml.5"
UNIT = REPO / "conf/wsechod.service"
VERSION = re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)


def need(*commands):
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/install-deps pkg)")


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


# --------------------------------------------------------------------------
# man pages
# --------------------------------------------------------------------------

def man_entries(path, section=None):
    """The terms of the .TP entries of a man page (of one .SH section if
    named), one list per entry: the words of the line after each .TP that
    its macro sets in bold, roff's \\- undone."""
    lines = path.read_text().splitlines()
    if section is not None:
        start = next(i for i, line in enumerate(lines)
                     if line in (f".SH {section}", f'.SH "{section}"'))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(".SH ")),
                   len(lines))
        lines = lines[start:end]
    bold = {".B": None, ".BR": 0, ".BI": 0, ".IB": 1, ".RB": 1}
    entries = []
    for i, line in enumerate(lines[:-1]):
        macro, _, rest = lines[i + 1].partition(" ")
        if line != ".TP" or macro not in bold:
            continue
        args = shlex.split(rest.replace("\\-", "-"))
        first = bold[macro]
        entries.append([" ".join(args)] if first is None else [a.strip() for a in args[first::2]])
    return entries


def man_terms(path, section=None):
    return [t for entry in man_entries(path, section) for t in entry]


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    need("man")
    r = run(["man", "--warnings", "-l", str(page)],
            env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
    assert r.returncode == 0, r
    assert r.stderr == "", f"man --warnings -l {page.name}:\n{r.stderr}"
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout, r.stdout[:500]


def effective_config_keys(tmp_path, san_dir):
    """Every key `wsechod -T` prints for a configuration that sets each kind
    of value (TLS with SNI pairs, all modules, status, health paths), the
    route paths left out: what the daemon knows, not what a list says."""
    need("openssl")
    for name in ("a", "b"):
        r = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN={name}.test", "-keyout", str(tmp_path / f"{name}.key"),
                 "-out", str(tmp_path / f"{name}.pem")])
        assert r.returncode == 0, r
    cfg = {
        "listen": ["127.0.0.1:1", {"address": "127.0.0.1:2", "tls": {
            "certificate": str(tmp_path / "a.pem"), "key": str(tmp_path / "a.key"),
            "certificates": [{"certificate": str(tmp_path / "b.pem"),
                              "key": str(tmp_path / "b.key")}]}},
            {"address": "127.0.0.1:4", "proxy_protocol": "on",
             "proxy_protocol_from": ["127.0.0.0/8"]},
            {"address": f"unix:{tmp_path}/ws.sock", "owner": "nobody"}],
        "handshake_rate_per_ip": {"rate": "20/s", "burst": 40},
        "user": "nobody",
        "routes": {"/": "echo", "/s": "stream", "/b": "broadcast"},
        "status": {"listen": "127.0.0.1:3"},
        "health_paths": {"healthz": "/h", "readyz": "/r"},
        "access_log": str(tmp_path / "access.log"),
    }
    r = run_cli(["-T", "-c", write_config(tmp_path / "all.yaml", cfg)], san_dir)
    assert r.returncode == 0, r
    keys = set(re.findall(r"^#\s*([a-z_]+):", r.stdout, re.M))  # unset ones are comments

    def walk(node, parent=None):
        if isinstance(node, dict):
            for k, v in node.items():
                if parent != "routes":
                    keys.add(k)
                walk(v, k if parent != "routes" else None)
        elif isinstance(node, list):
            for item in node:
                walk(item, parent)
    walk(yaml.safe_load(r.stdout))
    return keys


def test_yaml_man_page_describes_every_config_key(tmp_path, san_dir):
    keys = effective_config_keys(tmp_path, san_dir)
    # the dump covers what it should: core, TLS, module, nested keys
    assert {"worker_processes", "user", "group", "session_tickets", "certificates", "delay",
            "interval", "self", "min_size", "readyz", "proxy_protocol_from", "owner",
            "burst", "per_ip_ipv6_prefix"} <= keys, keys
    terms = set(man_terms(MAN5))
    missing = sorted(keys - terms)
    assert not missing, f"wsechod.yaml(5) has no entry for {missing}"
    # and describes no key the daemon does not know
    stale = sorted(t for t in terms if re.fullmatch(r"[a-z_]+", t) and t not in keys)
    assert not stale, f"wsechod.yaml(5) describes unknown keys {stale}"


def test_daemon_man_page_has_every_option_signal_and_exit_status(tmp_path, san_dir):
    usage = run_cli(["-h"], san_dir).stdout
    options = set(re.findall(r"^\s+(-\w)\b", usage, re.M))
    assert options >= {"-c", "-t", "-T", "-s", "-h", "-v"}, usage
    option_terms = {t.split()[0] for t in man_terms(MAN8, "OPTIONS")}
    assert options <= option_terms, f"wsechod(8) OPTIONS lacks {options - option_terms}"

    # every -s name with its signal, as the binary's usage pairs them, and
    # every signal of the README's table
    pairs = re.findall(r"\b([a-z]+) \((SIG[A-Z0-9]+)", usage)
    assert len(pairs) == 5, usage
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Signals"):]
    table = table[:table.index("\n## ", 1)]
    readme_sigs = set(re.findall(r"^\| `(SIG\w+)`|, `(SIG\w+)`", table, re.M))
    readme_sigs = {s for pair in readme_sigs for s in pair if s}
    assert {"SIGHUP", "SIGINT", "SIGUSR2"} <= readme_sigs, table
    entries = man_entries(MAN8, "SIGNALS")
    for name, sig in pairs:
        assert any(sig in e and f"-s {name}" in e for e in entries), (name, sig, entries)
    for sig in readme_sigs:
        assert any(sig in e for e in entries), (sig, entries)

    # the exit statuses the binary gives are the ones documented
    bad = write_config(tmp_path / "bad.yaml", "worker_processes: 0\n")
    seen = {
        run_cli(["-h"], san_dir).returncode,
        run_cli(["-t", "-c", bad], san_dir).returncode,
        run_cli(["-s", "stop", "-c", bad], san_dir).returncode,
        run_cli(["-x"], san_dir).returncode,
        run_cli(["-s", "bogus", "-c", REPO / "conf/wsechod.yaml"], san_dir).returncode,
    }
    assert seen == {0, 1, 2}, seen
    documented = {int(t) for t in man_terms(MAN8, "EXIT STATUS")}
    assert documented == seen, documented


def test_versions_agree(san_dir):
    """The Makefile's VERSION is the binary's, the man pages' and the
    Debian changelog's (make deb refuses a mismatch too)."""
    r = run_cli(["-v"], san_dir)
    assert r.stdout.strip() == f"wsechod/{VERSION}", r
    for page in (MAN8, MAN5):
        th = next(line for line in page.read_text().splitlines() if line.startswith(".TH "))
        assert f'"wsechod {VERSION}"' in th, (page.name, th)
    head = (REPO / "scripts/debian/changelog").read_text().splitlines()[0]
    assert head.startswith(f"wsechod ({VERSION}) "), head


# --------------------------------------------------------------------------
# make install / make uninstall
# --------------------------------------------------------------------------

def make(*args, timeout=300):
    return run(["make", "--no-print-directory", "-C", str(REPO)] + list(args), timeout=timeout)


def unit_settings(text):
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_make_install_layout(tmp_path):
    dest = tmp_path / "root"
    r = make("install", f"DESTDIR={dest}")
    assert r.returncode == 0, r
    assert not (dest / "etc/passwd").exists()  # no user made inside a DESTDIR
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == {
        "usr/local/sbin/wsechod",
        "usr/local/lib/systemd/system/wsechod.service",
        "usr/local/lib/sysusers.d/wsechod.conf",
        "usr/local/share/man/man8/wsechod.8",
        "usr/local/share/man/man5/wsechod.yaml.5",
        "usr/local/share/doc/wsechod/README.md",
        "usr/local/share/doc/wsechod/examples/wsechod.yaml",
        "usr/local/share/doc/wsechod/examples/wsechod.logrotate",
        "etc/wsechod/wsechod.yaml",
        "etc/logrotate.d/wsechod",
    }, files
    assert os.access(dest / "usr/local/sbin/wsechod", os.X_OK)

    unit_text = (dest / "usr/local/lib/systemd/system/wsechod.service").read_text()
    assert not re.search(r"@[A-Z]+@", unit_text), "unsubstituted @VAR@ in the unit"
    u = unit_settings(unit_text)
    assert u["User"] == ["wsechod"] and u["Group"] == ["wsechod"], u
    assert u["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"], u
    assert u["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"], u
    assert u["Type"] == ["notify"] and u["KillMode"] == ["mixed"], u
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"], u
    assert u["ExecStart"] == ["/usr/local/sbin/wsechod -c /etc/wsechod/wsechod.yaml"], u
    assert u["RuntimeDirectory"] == ["wsechod"] and u["LogsDirectory"] == ["wsechod"], u
    assert u["SystemCallFilter"][0] == "@system-service", u
    assert "kill -s USR2 --kill-whom=main" in unit_text  # the binary-upgrade comment

    sysusers = (dest / "usr/local/lib/sysusers.d/wsechod.conf").read_text()
    assert re.search(r"^u wsechod - ", sysusers, re.M), sysusers

    conf_path = dest / "etc/wsechod/wsechod.yaml"
    conf = yaml.safe_load(conf_path.read_text())
    assert "user" not in conf and "group" not in conf, conf
    assert conf["pid_file"] == "/run/wsechod/wsechod.pid", conf
    assert conf["error_log"] == "/var/log/wsechod/error.log", conf
    assert conf_path.read_bytes() == (dest / "usr/local/share/doc/wsechod/examples/wsechod.yaml").read_bytes()
    r = run([str(dest / "usr/local/sbin/wsechod"), "-t", "-c", str(conf_path)])
    assert r.returncode == 0, r
    rot = (dest / "etc/logrotate.d/wsechod").read_text()
    assert "/var/log/wsechod/*.log" in rot and "/run/wsechod/wsechod.pid" in rot, rot


def test_make_uninstall_keeps_only_changed_config(tmp_path):
    dest = tmp_path / "root"
    assert make("install", f"DESTDIR={dest}").returncode == 0
    conf = dest / "etc/wsechod/wsechod.yaml"
    rot = dest / "etc/logrotate.d/wsechod"
    changed = conf.read_text().replace("worker_processes: auto", "worker_processes: 3")
    assert changed != conf.read_text()
    conf.write_text(changed)

    # a new install leaves the operator's file alone
    assert make("install", f"DESTDIR={dest}").returncode == 0
    assert conf.read_text() == changed

    r = make("uninstall", f"DESTDIR={dest}")
    assert r.returncode == 0, r
    assert conf.read_text() == changed, "make uninstall deleted a changed config"
    assert f"keeping {conf}" in r.stdout, r.stdout
    assert not rot.exists(), "the unchanged logrotate file should have gone"
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert left == ["etc/wsechod/wsechod.yaml"], left

    # unchanged: everything goes, /etc/wsechod too
    dest2 = tmp_path / "root2"
    assert make("install", f"DESTDIR={dest2}").returncode == 0
    r = make("uninstall", f"DESTDIR={dest2}")
    assert r.returncode == 0, r
    assert "keeping" not in r.stdout, r.stdout
    left = sorted(str(p.relative_to(dest2)) for p in dest2.rglob("*") if p.is_file())
    assert left == [], left
    assert not (dest2 / "etc/wsechod").exists()


def test_unit_exposure_is_lower_than_before(tmp_path):
    """systemd-analyze security of the installed unit: the unit running as
    root scored 4.2 here."""
    need("systemd-analyze")
    dest = tmp_path / "root"
    assert make("install", f"DESTDIR={dest}").returncode == 0
    unit = dest / "usr/local/lib/systemd/system/wsechod.service"
    r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)])
    m = re.search(r"Overall exposure level for wsechod\.service: (\d+\.\d+)", r.stdout)
    if m is None and "offline" in r.stderr:
        pytest.skip(f"systemd-analyze security --offline unsupported: {r.stderr.strip()}")
    assert m, r
    assert float(m.group(1)) < 4.2, r.stdout


# --------------------------------------------------------------------------
# the unit's identity and system call filter, exercised
# --------------------------------------------------------------------------

def expand_syscall_group(group, cache={}):
    if group not in cache:
        out = run(["systemd-analyze", "syscall-filter", "--no-pager", group]).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            names |= expand_syscall_group(line) if line.startswith("@") else {line}
        assert names, f"systemd-analyze knows no syscall group {group}"
        cache[group] = names
    return cache[group]


def unit_allowed_syscalls():
    allowed, denied = set(), set()
    for value in unit_settings(UNIT.read_text())["SystemCallFilter"]:
        deny = value.startswith("~")
        for item in value.lstrip("~").split():
            names = expand_syscall_group(item) if item.startswith("@") else {item}
            (denied if deny else allowed).update(names)
    return allowed - denied


def free_privileged_port():
    for port in range(1023, 600, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


def test_unprivileged_master_stays_within_the_unit_sandbox():
    """The master run as the unit runs it, minus systemd: not root (here
    nobody), CAP_NET_BIND_SERVICE its only capability (ambient, bounding
    set), on a port below 1024, with TLS, the status listener, the access
    log and every module; a reload and a binary upgrade keep an open
    WebSocket. Every system call of every process is in the unit's
    SystemCallFilter (traced with strace -f)."""
    need("strace", "setpriv", "systemd-analyze", "openssl")
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    allowed = unit_allowed_syscalls()
    assert {"read", "sendmsg", "epoll_wait"} <= allowed
    d = Path(tempfile.mkdtemp(prefix="wsechod-unpriv-"))
    proc = None
    try:
        os.chmod(d, 0o755)
        nobody = pwd.getpwnam("nobody")
        shutil.copy(RELEASE_BIN, d / "wsechod")
        r = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")])
        assert r.returncode == 0, r
        for f in ("k.pem", "c.pem"):
            os.chown(d / f, nobody.pw_uid, -1)
        run_dir = d / "run"
        run_dir.mkdir()
        os.chown(run_dir, nobody.pw_uid, nobody.pw_gid)  # what RuntimeDirectory= does
        port, tls_port, status_port = free_privileged_port(), pick_free_port(), pick_free_port()
        cfg = {
            "worker_processes": 2,
            "listen": [f"127.0.0.1:{port}", {"address": f"127.0.0.1:{tls_port}", "tls": {
                "certificate": str(d / "c.pem"), "key": str(d / "k.pem")}}],
            "pid_file": str(run_dir / "wsechod.pid"),
            "error_log": str(run_dir / "error.log"),
            "access_log": str(run_dir / "access.log"),
            "log_level": "info",
            "status": {"listen": f"127.0.0.1:{status_port}"},
            "permessage_deflate": {"enabled": "on"},
            "worker_rlimit_nofile": 4096,
            "worker_cpu_affinity": "auto",
            "shutdown_timeout": "1s",
            "close_timeout": "1s",
            "routes": {"/": "echo", "/d": {"module": "echo", "delay": "10ms"},
                       "/s": {"module": "stream", "interval": "10ms", "count": 3},
                       "/b": {"module": "broadcast", "self": 1}},
        }
        conf = write_config(d / "wsechod.yaml", cfg)
        os.chmod(conf, 0o644)
        trace = d / "trace"
        pid_file = run_dir / "wsechod.pid"
        proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", str(trace),
             "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
             "--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
             "--bounding-set=-all,+net_bind_service", "--no-new-privs",
             str(d / "wsechod"), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def master():
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError):
                return None

        def serving():
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()!r} "
                                     f"{(run_dir / 'error.log').read_text()[-2000:]!r}")
            try:
                ws = RawWS(port, timeout=2.0)
            except (OSError, EOFError, AssertionError):
                return False
            ok = ws.echo("ready?") == b"ready?"
            ws.close()
            return ok
        wait_until(serving, 30, interval=0.1, what=f"an unprivileged master on port {port}")
        first = master()
        with open(f"/proc/{first}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert int(status["Uid"].split()[1]) == nobody.pw_uid, status["Uid"]
        assert int(status["CapEff"], 16) == 1 << 10, status["CapEff"]  # CAP_NET_BIND_SERVICE
        assert int(status["CapBnd"], 16) == 1 << 10, status["CapBnd"]
        assert (run_dir / "error.log").stat().st_uid == nobody.pw_uid

        async def traffic():
            import websockets
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            async with websockets.connect(f"wss://127.0.0.1:{tls_port}/d", ssl=ctx) as ws:
                await ws.send("x" * 5000)
                assert await ws.recv() == "x" * 5000
            async with websockets.connect(f"ws://127.0.0.1:{port}/s", compression=None) as ws:
                assert len([m async for m in ws]) == 3
            async with websockets.connect(f"ws://127.0.0.1:{port}/b") as ws:  # deflate offered
                await ws.send("z" * 300)
                assert await ws.recv() == "z" * 300
        import urllib.request
        run_async(traffic(), timeout=30)
        body = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics", timeout=10).read()
        assert b"wsechod_connections_accepted_total" in body
        urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status.json", timeout=10).read()

        kept = RawWS(port, timeout=10.0)
        assert kept.echo("before") == b"before"
        os.kill(first, signal.SIGHUP)
        wait_until(lambda: "reload complete" in (run_dir / "error.log").read_text(), 20,
                   what="reload complete")
        assert kept.echo("after reload") == b"after reload"
        os.kill(first, signal.SIGUSR1)
        wait_until(lambda: "log files reopened" in (run_dir / "error.log").read_text(), 20,
                   what="log files reopened")
        os.kill(first, signal.SIGUSR2)
        second = wait_until(lambda: master() not in (None, first) and master(), 30,
                            what="the new master of the binary upgrade")
        wait_until(lambda: not pid_alive(first), 20, what="the old master's exit")
        assert kept.echo("after upgrade") == b"after upgrade"
        run_async(traffic(), timeout=30)
        kept.close()
        os.kill(second, signal.SIGTERM)
        wait_until(lambda: not pid_alive(second), 20, what="the stop")
        assert proc.wait(30) == 0
        proc = None
        assert not pid_file.exists()

        used, started = set(), False
        exe = f'execve("{d}/wsechod"'
        for line in trace.read_text().splitlines():
            m = re.match(r"^\d+ +([a-z_0-9]+)\(", line)
            if not m:
                continue
            if not started:  # setpriv's own calls come before
                started = m.group(1) == "execve" and line.split(None, 1)[1].startswith(exe)
                if not started:
                    continue
            used.add(m.group(1))
        assert {"accept4", "sendmsg", "execve", "clone"} <= used, sorted(used)
        outside = sorted(used - allowed)
        assert not outside, f"system calls the unit's SystemCallFilter refuses: {outside}"
    finally:
        if proc is not None and proc.poll() is None:
            for pid_text in [p.read_text() for p in [d / "run/wsechod.pid"] if p.exists()]:
                try:
                    os.kill(int(pid_text), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            proc.kill()
            proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# the Debian package
# --------------------------------------------------------------------------

def dpkg_status(pkg):
    r = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg])
    return r.stdout.strip() if r.returncode == 0 else ""


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_deb_builds_lints_installs_upgrades_and_purges(tmp_path):
    need("dpkg-buildpackage", "dh", "lintian", "dpkg", "setpriv")
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root")
    # Never on a machine where wsechod is installed, as a package or by make install.
    status = dpkg_status("wsechod")
    present = [p for p in ("/etc/wsechod", "/etc/logrotate.d/wsechod", "/run/wsechod",
                           "/var/log/wsechod", "/lib/systemd/system/wsechod.service",
                           "/usr/local/sbin/wsechod", "/usr/sbin/wsechod") if os.path.lexists(p)]
    if status not in ("", "un") or present:
        pytest.skip(f"wsechod is installed here (dpkg: {status!r}, {present}): left alone")

    r = make("deb", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = REPO / "build" / f"wsechod_{VERSION}_{arch}.deb"
    assert deb.exists(), sorted(p.name for p in (REPO / "build").iterdir())

    fields = run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"]).stdout
    assert f"Package: wsechod\nVersion: {VERSION}\n" in fields, fields
    assert "systemd-sysusers" in fields and "libssl3" in fields, fields
    members = run(["dpkg-deb", "-c", str(deb)]).stdout
    for path in ("./usr/sbin/wsechod", "./etc/wsechod/wsechod.yaml", "./etc/logrotate.d/wsechod",
                 "./lib/systemd/system/wsechod.service", "./usr/lib/sysusers.d/wsechod.conf",
                 "./usr/share/man/man8/wsechod.8.gz", "./usr/share/man/man5/wsechod.yaml.5.gz",
                 "./usr/share/doc/wsechod/README.md", "./usr/share/doc/wsechod/copyright"):
        assert f" {path}\n" in members, (path, members)
    ctrl = tmp_path / "ctrl"
    assert run(["dpkg-deb", "-e", str(deb), str(ctrl)]).returncode == 0
    assert (ctrl / "conffiles").read_text().split() == ["/etc/logrotate.d/wsechod",
                                                        "/etc/wsechod/wsechod.yaml"]

    lint = run(["lintian", "--pedantic", "--display-info", str(deb)], timeout=300)
    print("lintian:\n" + lint.stdout)
    errors = [line for line in lint.stdout.splitlines() if line.startswith("E: ")]
    assert not errors, lint.stdout
    assert lint.returncode == 0, lint

    had_user, had_group = user_exists("wsechod"), "wsechod" in {g.gr_name for g in grp.getgrall()}
    master = None
    try:
        r = run(["dpkg", "-i", str(deb)])
        assert r.returncode == 0, r
        assert dpkg_status("wsechod") == "ii"
        pw = pwd.getpwnam("wsechod")  # made by systemd-sysusers in postinst
        assert pw.pw_shell.endswith("nologin") and pw.pw_uid < 1000, pw
        link = Path("/etc/systemd/system/multi-user.target.wants/wsechod.service")
        assert os.readlink(link) == "/lib/systemd/system/wsechod.service"  # enabled
        r = run(["systemd-analyze", "verify", "/lib/systemd/system/wsechod.service"])
        assert r.returncode == 0 and r.stderr == "", r
        assert run(["/usr/sbin/wsechod", "-t"]).returncode == 0

        # What systemd would do (it is not PID 1 here): the runtime and log
        # directories owned by the user, the master started as it.
        port = pick_free_port()
        conf = Path("/etc/wsechod/wsechod.yaml")
        conf.write_text(conf.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        for p in ("/run/wsechod", "/var/log/wsechod"):
            os.makedirs(p, exist_ok=True)
            os.chown(p, pw.pw_uid, pw.pw_gid)
        master = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
             "--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
             "--bounding-set=-all,+net_bind_service", "/usr/sbin/wsechod"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file = Path("/run/wsechod/wsechod.pid")

        def pid():
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError):
                return None
        wait_until(lambda: pid() == master.pid, 15, what="the packaged master's pid file")
        ws = wait_until(lambda: _try_ws(port), 15, what="the packaged master serving")
        assert ws.echo("hello") == b"hello"

        # dpkg -i again: an upgrade, which upgrades the running binary
        # instead of restarting anything.
        r = run(["dpkg", "-i", str(deb)])
        assert r.returncode == 0, r
        assert "binary upgrade started" in r.stdout, r.stdout
        new = wait_until(lambda: pid() not in (None, master.pid) and pid(), 20,
                         what="the new master in the pid file")
        assert master.wait(20) == 0
        assert ws.echo("still here") == b"still here"
        ws.close()
        assert Path(f"/proc/{new}/exe").resolve() == Path("/usr/sbin/wsechod")
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not pid_alive(new), 20, what="the new master's stop")

        r = run(["dpkg", "-r", "wsechod"])
        assert r.returncode == 0, r
        assert not os.path.exists("/usr/sbin/wsechod")
        assert conf.exists(), "dpkg -r removed a conffile"
        r = run(["dpkg", "--purge", "wsechod"])
        assert r.returncode == 0, r
        for p in ("/etc/wsechod", "/etc/logrotate.d/wsechod", "/var/log/wsechod", str(link)):
            assert not os.path.lexists(p), f"{p} left after purge"
        assert dpkg_status("wsechod") in ("", "un")
    finally:
        if master is not None and master.poll() is None:
            master.kill()
            master.wait(10)
        for p in run(["pgrep", "-u", "wsechod", "-f", "^wsechod: "]).stdout.split() \
                if user_exists("wsechod") else []:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if dpkg_status("wsechod") not in ("", "un"):
            run(["dpkg", "--purge", "wsechod"])
        shutil.rmtree("/run/wsechod", ignore_errors=True)
        shutil.rmtree("/var/log/wsechod", ignore_errors=True)
        if not had_user and user_exists("wsechod"):
            run(["userdel", "wsechod"])
        if not had_group and "wsechod" in {g.gr_name for g in grp.getgrall()}:
            run(["groupdel", "wsechod"])


def _try_ws(port):
    try:
        return RawWS(port, timeout=3.0)
    except (OSError, EOFError, AssertionError):
        return None
