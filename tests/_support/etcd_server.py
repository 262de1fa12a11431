"""Run a real etcd server as a subprocess, on free loopback ports, for the tests.

Its data dir is on tmpfs (``/dev/shm``) where there is one: etcd fsyncs every write, and
on a disk that costs seconds per cluster start and makes write-heavy tests wait on the
disk. A SIGKILL loses nothing either way (the page cache outlives the process); the log
stays in the work dir.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import httpx

_TMPFS = Path("/dev/shm")


@functools.cache
def plain_verify() -> ssl.SSLContext:
    """The ``verify=`` for a plain-HTTP request: one SSL context made once.

    httpx makes a new context from certifi's bundle for ``verify=True`` at every
    ``httpx.get`` (up to a quarter second on a busy machine), though HTTP needs none.
    """
    return ssl.create_default_context()


# A data dir takes ~125 MB of tmpfs (etcd preallocates its WAL and db), a cluster three
# times that, and each xdist worker may run one of each; containers often give /dev/shm
# only 64 MB.
_TMPFS_NEEDED = 2 << 30


def _data_root() -> Path | None:
    """Where etcd data dirs go: tmpfs if this machine has enough, else None (the work dir)."""
    try:
        stat = os.statvfs(_TMPFS)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < _TMPFS_NEEDED or not os.access(_TMPFS, os.W_OK):
        return None
    return _TMPFS


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port that this process has not handed out before: the kernel may
    give the same free port twice before etcd binds it (a 3-member cluster once got
    one port for two of its members' URLs)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def etcd_binary() -> str | None:
    return shutil.which("etcd")


class EtcdServer:
    """One etcd member with its own data dir. ``kill()`` and ``start()`` keep the data."""

    def __init__(
        self,
        workdir: Path,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        ca_file: Path | None = None,
        extra_args: list[str] | None = None,
        name: str = "test",
        initial_cluster: str | None = None,
        initial_cluster_token: str | None = None,
    ) -> None:
        """:param name: the member's name (``--name``).
        :param initial_cluster: ``--initial-cluster``; by default this member alone. etcd
            reads it (and the token and state) only when the data dir has no WAL yet.
        :param initial_cluster_token: ``--initial-cluster-token``, if not etcd's default.
        """
        binary = etcd_binary()
        assert binary is not None
        self.binary = binary
        self.workdir = workdir
        root = _data_root()
        if root is None:
            self.data_dir = workdir / "data"
        else:
            holder = tempfile.mkdtemp(prefix="anyrdzv-test-etcd-", dir=root)
            self.data_dir = Path(holder) / "data"
            # ~125 MB of RAM on tmpfs: freed with the server (at the latest at exit).
            weakref.finalize(self, shutil.rmtree, holder, ignore_errors=True)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.extra_args = list(extra_args or [])
        self.scheme = "https" if cert else "http"
        self.endpoint = f"127.0.0.1:{self.client_port}"
        self.url = f"{self.scheme}://{self.endpoint}"
        self.name = name
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.initial_cluster_token = initial_cluster_token
        self.initial_cluster_state = "new"
        self.process: subprocess.Popen[bytes] | None = None
        self._verify: ssl.SSLContext = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else plain_verify()
        )

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process and return at once; ``wait_ready`` waits for it to answer."""
        args = [
            self.binary,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            self.initial_cluster,
            "--log-level",
            "error",
        ]
        if self.initial_cluster_token is not None:
            args += ["--initial-cluster-token", self.initial_cluster_token]
        if self.initial_cluster_state != "new":
            args += ["--initial-cluster-state", self.initial_cluster_state]
        if self.cert and self.key:
            args += ["--cert-file", str(self.cert), "--key-file", str(self.key)]
        args += self.extra_args
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ})
        log.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited: see {self.workdir / 'etcd.log'}")
            try:
                response = httpx.get(f"{self.url}/health", verify=self._verify, timeout=1)
                if response.status_code in (200, 401) or "health" in response.text:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become ready within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def terminate(self) -> None:
        """SIGTERM, and wait: a graceful shutdown, as in a rolling upgrade."""
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def enable_auth(self, password: str) -> None:
        """Create the root user with ``password``, and turn auth on, through the API."""
        with httpx.Client(base_url=self.url, timeout=5, verify=self._verify) as client:
            for path, body in (
                ("/v3/auth/user/add", {"name": "root", "password": password}),
                ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                ("/v3/auth/enable", {}),
            ):
                response = client.post(path, json=body)
                assert response.status_code == 200, (path, response.text)
