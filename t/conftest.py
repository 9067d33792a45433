"""Shared fixtures and helpers for the wsechod test suite.

Every test gets its own temporary directory, its own free port and (when it
needs one) its own server.  The server under test is WSECHOD_BIN (default:
build/wsechod-asan relative to the repository root, the parent of t/).  It
runs with ASan/UBSan writing their reports into <tmp>/san/; any report file
fails the test.
"""

import asyncio
import base64
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
import websockets
import yaml

REPO = Path(__file__).resolve().parent.parent
_bin = Path(os.environ.get("WSECHOD_BIN", "build/wsechod-asan"))
BIN = _bin if _bin.is_absolute() else (REPO / _bin)
# Memory is measured on the release build: ASan's quarantine and shadow
# memory would hide what the server itself holds.
_rel = Path(os.environ.get("WSECHOD_RELEASE_BIN", "build/wsechod"))
RELEASE_BIN = _rel if _rel.is_absolute() else (REPO / _rel)

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WORKER_RE = re.compile(r"wsechod: worker process #(\d+) gen (\d+)")


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------

def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_async(coro, timeout=20.0):
    """Run one coroutine in a fresh event loop with a hard deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def pick_free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sanitizer_env(san_dir):
    san_dir = Path(san_dir)
    san_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = f"detect_leaks=1:abort_on_error=0:log_path={san_dir}/asan"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={san_dir}/ubsan"
    return env


def sanitizer_reports(san_dir):
    san_dir = Path(san_dir)
    if not san_dir.is_dir():
        return []
    return sorted(list(san_dir.glob("asan.*")) + list(san_dir.glob("ubsan.*")))


def assert_no_sanitizer_reports(san_dir):
    reports = sanitizer_reports(san_dir)
    if reports:
        text = []
        for p in reports:
            try:
                body = p.read_text(errors="replace")
            except OSError as e:
                body = f"<unreadable: {e}>"
            text.append(f"===== {p.name} =====\n{body[:20000]}")
        pytest.fail("sanitizer reports found:\n" + "\n".join(text), pytrace=False)


def run_cli(args, san_dir, timeout=15, cwd=None):
    """Run the binary with args (non-server invocations such as -t, -h, -s)."""
    if not BIN.exists():
        pytest.fail(f"server binary {BIN} does not exist (build it with "
                    f"`make -C {REPO} build/wsechod-asan`)", pytrace=False)
    return subprocess.run([str(BIN)] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=sanitizer_env(san_dir),
                          cwd=cwd)


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(")") + 2:].split()[0]
    return state not in ("Z", "X")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def socket_inodes(pid):
    """Set of socket inodes (ints) held open by pid."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except (FileNotFoundError, ProcessLookupError):
        return out
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            out.add(int(m.group(1)))
    return out


def _tcp_rows():
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, remote, st, inode = parts[1], parts[2], parts[3], int(parts[9])
            lport = int(local.rsplit(":", 1)[1], 16)
            rport = int(remote.rsplit(":", 1)[1], 16)
            yield lport, rport, st, inode


def close_wait_count(port):
    """Server-side sockets on `port` whose peer has closed but we have not."""
    return sum(1 for lport, _r, st, _i in _tcp_rows() if st == "08" and lport == port)


def proc_status_kib(pid, field):
    """VmRSS, VmHWM, ... of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def listen_inodes(port):
    """Inodes of sockets in LISTEN state on local port `port`."""
    return {inode for lport, _r, st, inode in _tcp_rows()
            if st == "0A" and lport == port and inode}


def established_inodes(port):
    """Server-side established sockets on `port`: {client_port: inode}."""
    return {rport: inode for lport, rport, st, inode in _tcp_rows()
            if st == "01" and lport == port and inode}


# --------------------------------------------------------------------------
# raw HTTP / WebSocket helpers
# --------------------------------------------------------------------------

def make_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_request(port, path="/", method="GET", proto="HTTP/1.1", key=None,
               host=None, upgrade="websocket", connection="Upgrade",
               version="13", extra=(), omit=()):
    """Build a WebSocket upgrade request; a header set to None or named in
    `omit` is left out."""
    headers = [
        ("Host", host if host is not None else f"127.0.0.1:{port}"),
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Key", key if key is not None else make_key()),
        ("Sec-WebSocket-Version", version),
    ]
    lines = [f"{method} {path} {proto}"]
    omit_l = {o.lower() for o in omit}
    for name, val in headers:
        if val is None or name.lower() in omit_l:
            continue
        lines.append(f"{name}: {val}")
    for name, val in extra:
        lines.append(f"{name}: {val}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port, host="127.0.0.1", timeout=5.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def recv_until_eof(sock, timeout=5.0):
    """Read until the peer closes. Returns (data, got_eof)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


class HttpResponse:
    def __init__(self, raw):
        self.raw = raw
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete HTTP response: {raw[:500]!r}")
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError(f"bad status line: {lines[0]!r}")
        self.version = m.group(1)
        self.status = int(m.group(2))
        self.reason = m.group(3) or ""
        self.headers = {}
        for line in lines[1:]:
            name, _, val = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(val.strip())
        self.body = body

    def header(self, name):
        vals = self.headers.get(name.lower())
        return vals[0] if vals else None

    def __repr__(self):
        return f"<HttpResponse {self.status} {self.raw[:300]!r}>"


def http_exchange(port, request, timeout=5.0):
    """Send raw bytes, read until the server closes; returns (HttpResponse, eof)."""
    s = connect(port, timeout=timeout)
    try:
        s.sendall(request)
        data, eof = recv_until_eof(s, timeout)
    finally:
        s.close()
    if not data:
        raise AssertionError(f"no response at all (eof={eof}) to {request[:200]!r}")
    return HttpResponse(data), eof


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, enc=None, length=None):
    """A client frame. enc forces the length encoding (7, 16 or 64 bits)
    whatever the payload size; length overrides the announced length."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    if enc is None:
        enc = 7 if n < 126 else 16 if n < 65536 else 64
    mbit = 0x80 if mask else 0
    if enc == 7:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif enc == 16:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload)) if len(payload) < 4096 \
        else _mask_fast(payload, key)
    return hdr + key + masked


def _mask_fast(payload, key):
    n = len(payload)
    k = int.from_bytes(key * ((n + 3) // 4), "big") >> (8 * ((4 - n % 4) % 4))
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWS:
    """Minimal synchronous WebSocket client on a raw socket."""

    rsv_allowed = 0     # RSV bits the server may set (0x40: permessage-deflate)

    def __init__(self, port, path="/", host="127.0.0.1", timeout=5.0, request=None,
                 trailing=b""):
        self.port = port
        self.key = make_key()
        self.sock = connect(port, host=host, timeout=timeout)
        self.buf = b""
        req = request if request is not None else ws_request(port, path=path, key=self.key)
        self.sock.sendall(req + trailing)
        head = self._read_until(b"\r\n\r\n", timeout)
        self.response = HttpResponse(head)
        if self.response.status != 101:
            # pull the rest of an error response for diagnostics
            rest, _ = recv_until_eof(self.sock, 1.0)
            self.sock.close()
            raise AssertionError(f"handshake failed: {head + self.buf + rest!r}")
        if request is None:
            got = self.response.header("sec-websocket-accept")
            if got != accept_for(self.key):
                self.sock.close()
                raise AssertionError(f"wrong Sec-WebSocket-Accept {got!r} for key {self.key!r}")
        self.local_port = self.sock.getsockname()[1]

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self._fill(deadline)
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out reading from server")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0):
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, rsv=rsv))

    def recv_frame(self, timeout=5.0):
        """Returns (fin, opcode, payload). Server frames must be unmasked."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._need(2, deadline)
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        assert b0 & 0x70 & ~self.rsv_allowed == 0, f"server set RSV bits: {b0:#x}"
        self.last_rsv1 = bool(b0 & 0x40)
        assert not (b1 & 0x80), "server frame is masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
        payload = self._need(n, deadline)
        return fin, opcode, payload

    def recv_message(self, timeout=5.0):
        """Reassemble one data message, answering nothing; returns (opcode, data).
        Control frames other than close are skipped; a close raises."""
        deadline = time.monotonic() + timeout
        op0, parts = None, []
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op in (OP_PING, OP_PONG):
                continue
            if op == OP_CLOSE:
                raise AssertionError(f"unexpected close frame {payload!r}")
            if op0 is None:
                assert op in (OP_TEXT, OP_BIN), f"unexpected opcode {op}"
                op0 = op
            else:
                assert op == OP_CONT, f"expected continuation, got {op}"
            parts.append(payload)
            if fin:
                return op0, b"".join(parts)

    def echo(self, data, timeout=5.0):
        """Send a text message and return the echoed payload (bytes)."""
        if isinstance(data, str):
            data = data.encode()
        self.send_frame(OP_TEXT, data)
        op, got = self.recv_message(timeout)
        assert op == OP_TEXT
        return got

    def recv_close(self, timeout=5.0):
        """Read frames (data echoes are returned too) until a close frame.
        Returns (code or None, reason, data_messages)."""
        deadline = time.monotonic() + timeout
        msgs = []
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:], msgs
            if op in (OP_TEXT, OP_BIN, OP_CONT):
                msgs.append((op, payload))

    def close(self, code=1000, timeout=5.0):
        """Client-initiated close; returns the server's close code."""
        try:
            self.send_frame(OP_CLOSE, close_payload(code))
            got, _r, _m = self.recv_close(timeout)
            return got
        finally:
            self.sock.close()

    def abort(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_eof(self, timeout=5.0):
        data, eof = recv_until_eof(self.sock, timeout)
        return eof


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

def base_config(tmp, port, workers=2, **overrides):
    cfg = {
        "worker_processes": workers,
        "listen": [f"127.0.0.1:{port}"],
        "pid_file": str(Path(tmp) / "wsechod.pid"),
        "error_log": str(Path(tmp) / "error.log"),
        "log_level": "info",
        "shutdown_timeout": "1s",
        "close_timeout": "1s",
        "handshake_timeout": "5s",
        "routes": {"/": "echo", "/echo": "echo"},
        # Most reload tests are about draining; t/test_handoff.py turns
        # handoff (the product default) back on.
        "reload_handoff": "off",
    }
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def write_config(path, cfg):
    path = Path(path)
    text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------

class Server:
    def __init__(self, tmp, port, cfg):
        self.tmp = Path(tmp)
        self.port = port
        self.cfg = cfg
        self.config_path = self.tmp / "wsechod.yaml"
        self.san_dir = self.tmp / "san"
        self.proc = None
        self.seen = set()          # every worker pid ever observed
        self.returncode = None
        self.bin = BIN
        write_config(self.config_path, cfg)

    # -- paths ---------------------------------------------------------------
    @property
    def log_path(self):
        return Path(self.cfg.get("error_log", self.tmp / "error.log"))

    @property
    def pid_file(self):
        return Path(self.cfg["pid_file"])

    @property
    def pid(self):
        return self.proc.pid

    # -- lifecycle -------------------------------------------------------------
    def start(self, wait=True, workers=None, timeout=15.0):
        if not self.bin.exists():
            pytest.fail(f"server binary {self.bin} does not exist", pytrace=False)
        self.stdout = open(self.tmp / "server.stdout", "ab")
        self.stderr = open(self.tmp / "server.stderr", "ab")
        self.proc = subprocess.Popen([str(self.bin), "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.stdout,
                                     stderr=self.stderr, env=sanitizer_env(self.san_dir),
                                     cwd=str(self.tmp))
        if wait:
            n = workers if workers is not None else self.expected_workers()
            self.wait_ready(n, timeout=timeout)
        return self

    def expected_workers(self):
        w = self.cfg.get("worker_processes", "auto")
        return os.cpu_count() if w == "auto" else int(w)

    def wait_ready(self, n, timeout=15.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode} during startup; "
                    f"stderr: {self.stderr_text()!r} log: {self.log_text()[-2000:]!r}")
            if len(self.workers()) != n:
                return False
            try:
                ws = RawWS(self.port, timeout=2.0)
            except (OSError, EOFError, AssertionError):
                return False
            try:
                return ws.echo("ready?") == b"ready?"
            except (OSError, EOFError, AssertionError):
                return False
            finally:
                try:
                    ws.close(timeout=2.0)
                except (OSError, EOFError, AssertionError):
                    pass
        wait_until(ready, timeout, interval=0.05,
                   what=f"server with {n} workers echoing on port {self.port}")

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=10.0):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master {self.proc.pid} did not exit within {timeout}s")
        return self.returncode

    def stop(self, timeout=10.0):
        """Graceful stop (SIGTERM); returns the master's exit status. Any of
        our processes still around afterwards are SIGKILLed."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.workers()  # remember the current pids
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                rc = None
        elif self.proc is not None:
            rc = self.proc.returncode
        self.returncode = rc
        self.kill_leftovers()
        return rc

    def kill_leftovers(self, grace=2.0):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        deadline = time.monotonic() + grace
        for pid in sorted(self.seen):
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            title = cmdline(pid)
            if pid_alive(pid) and title and title.startswith("wsechod"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for f in (getattr(self, "stdout", None), getattr(self, "stderr", None)):
            if f:
                f.close()

    # -- introspection -----------------------------------------------------------
    def workers(self, include_draining=False):
        """{pid: (slot, gen, draining)} of the master's worker children."""
        out = {}
        for c in children(self.proc.pid):
            title = cmdline(c)
            if not title or not pid_alive(c):
                continue
            m = WORKER_RE.search(title)
            if not m:
                continue
            self.seen.add(c)
            draining = "draining" in title
            if draining and not include_draining:
                continue
            out[c] = (int(m.group(1)), int(m.group(2)), draining)
        return out

    def wait_workers(self, n, gen=None, timeout=10.0, what=None):
        def ok():
            w = self.workers()
            if gen is not None:
                w = {p: v for p, v in w.items() if v[1] == gen}
            return w if len(w) == n else None
        return wait_until(ok, timeout, what=what or f"{n} workers (gen={gen})")

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        try:
            return (self.tmp / "server.stderr").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pred, timeout=10.0, what="log line"):
        """pred: substring or callable(line)->bool. Returns the first match."""
        if isinstance(pred, str):
            s = pred
            pred = lambda line: s in line  # noqa: E731
        def find():
            for line in self.log_text().splitlines():
                if pred(line):
                    return line
            return None
        try:
            return wait_until(find, timeout, interval=0.05, what=what)
        except AssertionError:
            raise AssertionError(f"{what} not in log:\n{self.log_text()[-4000:]}")

    def write_config(self, cfg):
        self.cfg = cfg
        write_config(self.config_path, cfg)

    def conn_owner(self, client_port, timeout=3.0):
        """Worker pid holding the server side of the connection from client_port."""
        def find():
            inode = established_inodes(self.port).get(client_port)
            if not inode:
                return None
            for pid in children(self.proc.pid):
                if inode in socket_inodes(pid):
                    return pid
            return None
        return wait_until(find, timeout, what=f"owner of connection from :{client_port}")

    def conn_owners(self, client_ports, timeout=3.0):
        """{client_port: worker pid} for many connections at once."""
        client_ports = list(client_ports)
        def find():
            est = established_inodes(self.port)
            if not all(est.get(p) for p in client_ports):
                return None
            fds = {pid: socket_inodes(pid) for pid in children(self.proc.pid)}
            out = {}
            for p in client_ports:
                owner = [pid for pid, inodes in fds.items() if est[p] in inodes]
                if len(owner) != 1:
                    return None
                out[p] = owner[0]
            return out
        return wait_until(find, timeout, what="owners of connections")


@pytest.fixture
def free_port():
    return pick_free_port()


@pytest.fixture
def san_dir(tmp_path):
    d = tmp_path / "san"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(autouse=True)
def _sanitizer_check(tmp_path):
    """Fail the test if any process it started left an ASan/UBSan report."""
    yield
    assert_no_sanitizer_reports(tmp_path / "san")


@pytest.fixture
def server_factory(tmp_path, free_port, _sanitizer_check):
    """make(workers=2, start=True, release=False, **config_overrides) -> Server.
    release=True runs the release build (for memory measurements)."""
    servers = []

    def make(workers=2, start=True, wait=True, release=False, **overrides):
        assert not servers, "one server per test"
        cfg = base_config(tmp_path, free_port, workers=workers, **overrides)
        srv = Server(tmp_path, free_port, cfg)
        if release:
            srv.bin = RELEASE_BIN
        servers.append(srv)
        if start:
            srv.start(wait=wait)
        return srv

    yield make
    for srv in servers:
        srv.stop()
    # the autouse _sanitizer_check (torn down after this) inspects srv.san_dir


@pytest.fixture
def server(server_factory):
    """A running 1-worker server with the default test config."""
    return server_factory(workers=1)


def ws_connect(port, path="/", **kw):
    """websockets.connect() with test defaults: use `async with ws_connect(..)`
    or `ws = await ws_connect(..)`."""
    kw.setdefault("max_size", None)
    kw.setdefault("compression", None)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("ping_interval", None)
    return websockets.connect(f"ws://127.0.0.1:{port}{path}", **kw)
