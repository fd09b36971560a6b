"""Issue 14, item 5 and the file modes of item 6: connections and memory have bounds.

An adversary held HTTPS connections open for ever by trickling a header byte every few
seconds, opened as many connections from one address as it liked, made ``jump ssh`` grow by
hundreds of megabytes by reading its output slowly, and could read ``state.db`` and
``audit.db`` (0644, in a data dir left as it was found). Each test below re-runs one of those
against a real daemon on loopback.
"""

import os
import select
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    BIN,
    Cluster,
    Site,
    build_site,
    http_get,
    running_cluster,
    wait_for_line,
)
from tests.security.probes import dial, insecure_tls, refused
from tests.support import free_ports, rss_kib

pytestmark = [pytest.mark.net, pytest.mark.e2e]

LIMITS = """connection_limits:
  max_connections_per_source: {total}
  max_unauthenticated_per_source: {unauthenticated}
  header_timeout: 5s
  idle_timeout: 5s
  tls_handshake_timeout: 5s
  login_grace_time: 5s
"""


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Cluster]:
    """A daemon with low caps (3 connections a source, 2 of them unauthenticated) and 5 s
    timeouts."""
    with running_cluster(tmp_path, LIMITS.format(total=3, unauthenticated=2)) as running:
        yield running


@pytest.fixture
def defaults(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as running:
        yield running


def _cut(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock``: reading what is there ends or fails (TLS
    records that carry no data, as session tickets, are not a close)."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(65536) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (ssl.SSLError, OSError):
        return True
    finally:
        sock.settimeout(timeout)


def _trickle(port: int, every: float, limit: float) -> float:
    """Send a request head one byte every ``every`` seconds over TLS; the seconds until the
    server cut the connection (``limit`` if it never did)."""
    head = b"GET /webapi/ping HTTP/1.1\r\nHost: acme.localhost\r\nX-Slow: " + b"a" * 1000
    start = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with insecure_tls().wrap_socket(raw, server_hostname="acme.localhost") as sock:
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - start
            readable, _, _ = select.select([sock], [], [], every)
            if readable and _cut(sock):
                return time.monotonic() - start
            if time.monotonic() - start > limit:
                break
    return limit


def test_trickling_https_client_is_cut_by_the_configured_header_timeout(limited: Cluster) -> None:
    took = _trickle(limited.port, every=2.0, limit=40)
    assert took < 10, f"a client trickling its header was held {took:.0f}s (header_timeout 5s)"


def test_trickling_https_client_is_cut_within_30s_by_default(defaults: Cluster) -> None:
    took = _trickle(defaults.port, every=2.0, limit=40)
    assert took <= 30, f"a client trickling its header was held {took:.0f}s by default"


def test_trickling_https_body_is_cut_within_30s_by_default(defaults: Cluster) -> None:
    raw = socket.create_connection(("127.0.0.1", defaults.port), timeout=10)
    with insecure_tls().wrap_socket(raw, server_hostname="acme.localhost") as sock:
        sock.sendall(
            b"POST /v1/login HTTP/1.1\r\nHost: acme.localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        start = time.monotonic()
        answer = b""
        while time.monotonic() - start < 40:
            try:
                sock.sendall(b" ")
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 2.0)
            if readable:
                sock.settimeout(0.0)  # TLS records without data (tickets) make it readable
                try:
                    chunk = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                except OSError:
                    break
                finally:
                    sock.settimeout(10)
                if not chunk:
                    break
                answer += chunk
        took = time.monotonic() - start
    assert took <= 30, f"a client trickling its body was held {took:.0f}s by default"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_silent_client_is_cut_during_the_tls_handshake(limited: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        start = time.monotonic()
        readable, _, _ = select.select([sock], [], [], 15)
        took = time.monotonic() - start
        assert readable, "a client that never started TLS was held 15s"
        assert _cut(sock)
        assert took < 10


def test_idle_keepalive_connection_is_closed(limited: Cluster) -> None:
    raw = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    with insecure_tls().wrap_socket(raw, server_hostname="acme.localhost") as sock:
        sock.sendall(b"GET /webapi/ping HTTP/1.1\r\nHost: acme.localhost\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 ")  # an answer (404: no tenant)
        start = time.monotonic()
        readable, _, _ = select.select([sock], [], [], 15)
        while readable and not _cut(sock):  # the rest of the answer
            readable, _, _ = select.select([sock], [], [], 15)
        assert readable, "an idle keep-alive connection was held 15s (idle_timeout 5s)"
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("listener", ["web", "ssh", "tunnel"])
def test_per_source_cap_refuses_the_next_unauthenticated_connection(
    limited: Cluster, listener: str
) -> None:
    port = {"web": limited.port, "ssh": limited.ssh_port, "tunnel": limited.tunnel_port}[listener]
    held = [dial(port) for _ in range(2)]
    try:
        for sock in held:
            assert not refused(sock, 0.5), f"{listener}: a connection under the cap was closed"
        extra = dial(port)
        with extra:
            assert refused(extra), f"{listener}: the 3rd unauthenticated connection was let in"
        held.pop().close()
        time.sleep(0.3)
        with dial(port) as again:
            assert not refused(again, 0.5), f"{listener}: a freed slot was not given back"
    finally:
        for sock in held:
            sock.close()
    wait_for_line(limited.log, "connection refused", limited.process)  # type: ignore[arg-type]
    status, metrics = http_get(limited.diag_port, "/metrics")
    assert status == 200
    assert f'jumpgate_proxy_connections_refused_total{{listener="{listener}"' in metrics


def test_per_source_cap_counts_established_https_connections(limited: Cluster) -> None:
    """Past the request head a connection no longer counts as unauthenticated, but it still
    counts against the total."""
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(3):
            raw = dial(limited.port)
            sock = insecure_tls().wrap_socket(raw, server_hostname="acme.localhost")
            sock.sendall(b"GET /webapi/ping HTTP/1.1\r\nHost: acme.localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 ")  # an answer (404: no tenant)
            held.append(sock)
        with dial(limited.port) as extra:
            assert refused(extra), "a 4th connection from one source was let in (cap 3)"
    finally:
        for sock in held:
            sock.close()


def test_unauthenticated_ssh_connection_is_cut_after_the_login_grace_time(
    limited: Cluster,
) -> None:
    with dial(limited.ssh_port) as sock:
        sock.sendall(b"SSH-2.0-slowpoke\r\n")
        start = time.monotonic()
        while time.monotonic() - start < 15:
            readable, _, _ = select.select([sock], [], [], 15)
            if readable and _cut(sock):
                break
        took = time.monotonic() - start
    assert took < 10, f"an SSH client that never authenticated was held {took:.0f}s"


def test_jump_ssh_memory_stays_bounded_with_a_slow_reader(
    defaults: Cluster, tmp_path: Path
) -> None:
    site: Site = build_site(defaults, tmp_path)
    reader = subprocess.Popen(
        [str(BIN / "jump"), "ssh", "web-1", "head -c 2G /dev/zero"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=site.admin.env,
    )
    assert reader.stdout is not None
    try:
        samples: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < 12:  # about 1 MB/s, in 100 KB sips
            chunk = reader.stdout.read(100_000)
            assert chunk, "the stream ended early"
            time.sleep(0.1)
            samples.append(rss_kib(reader.pid) / 1024)
        baseline = samples[len(samples) // 4]  # past start-up (imports, login, key exchange)
        growth = max(samples) - baseline
        print(f"jump ssh RSS {baseline:.0f} MB -> {max(samples):.0f} MB with a slow reader")
        assert growth < 24, f"jump ssh grew {growth:.0f} MB in 9s with a slow reader: {samples}"
    finally:
        reader.send_signal(signal.SIGTERM)
        reader.kill()
        reader.wait(timeout=10)
        reader.stdout.close()
        site.node.kill(signal.SIGTERM)


def test_data_files_are_private_and_the_data_dir_is_tightened(tmp_path: Path) -> None:
    web, ssh, tunnel, diag = free_ports(4)
    running = Cluster(tmp_path, web, ssh, tunnel, diag)
    running.data_dir.mkdir(mode=0o755)
    os.chmod(running.data_dir, 0o755)  # noqa: S103 - as a umask of 022 leaves it
    running.start()
    try:
        assert stat.S_IMODE(running.data_dir.stat().st_mode) == 0o700
        assert "data dir tightened" in running.log.read_text()
        for name in ("state.db", "audit.db", "master.key"):
            assert (running.data_dir / name).exists(), name
        private = [
            path
            for path in running.data_dir.iterdir()
            if path.name.startswith(("state.db", "audit.db", "master.key"))
        ]
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in private}
        assert all(mode == "0o600" for mode in modes.values()), modes
    finally:
        running.stop()
