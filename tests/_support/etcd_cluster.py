"""Run a real etcd cluster of N members on loopback, for tests and benchmarks.

Each member is an :class:`~etcd_server.EtcdServer` with its own name (``m0``, ``m1``, …),
client and peer ports, and data dir; they share one ``--initial-cluster`` and a token
no other cluster uses. etcd's default election timing is left alone (heartbeat 100 ms,
election timeout 1 s) unless ``extra_args`` says otherwise.
"""

from __future__ import annotations

import signal
import ssl
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from tests._support.etcd_server import EtcdServer, plain_verify

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from typing_extensions import Self

# A SIGSTOPped member accepts connections (the kernel does) but never answers.
_STATUS_TIMEOUT = 0.5


class EtcdCluster:
    """``size`` etcd members on loopback, started together; one can be killed,
    restarted, stopped (SIGSTOP) and continued (SIGCONT) at a time or all.

    Use it as a context manager, or call :meth:`close`: both SIGKILL every member,
    stopped ones included.
    """

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        ca_file: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        token = f"anyrdzv-test-{uuid.uuid4().hex}"
        self.workdir = workdir
        self.members: list[EtcdServer] = []
        for i in range(size):
            member_dir = workdir / f"m{i}"
            member_dir.mkdir(parents=True, exist_ok=True)
            self.members.append(
                EtcdServer(
                    member_dir,
                    cert=cert,
                    key=key,
                    ca_file=ca_file,
                    extra_args=extra_args,
                    name=f"m{i}",
                    initial_cluster_token=token,
                )
            )
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial_cluster
        self.endpoints: list[str] = [m.endpoint for m in self.members]
        self.endpoint_list = ",".join(self.endpoints)
        self.stopped: set[int] = set()
        self._verify: ssl.SSLContext = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else plain_verify()
        )
        self._member_ids: dict[str, int] = {}  # etcd's member id -> index; ids survive restarts

    @property
    def size(self) -> int:
        return len(self.members)

    def pid(self, i: int) -> int:
        process = self.members[i].process
        assert process is not None, f"member {i} is not running"
        return process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start every member at once, and wait until the cluster has a leader.

        A member of a new cluster waits for its peers before it serves anything, so
        the members must start together, not one after the other.
        """
        for member in self.members:
            member.launch()
        try:
            deadline = time.monotonic() + timeout
            for member in self.members:
                member.wait_ready(max(0.1, deadline - time.monotonic()))
            self.wait_leader(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.close()
            raise

    # -- the leader -----------------------------------------------------------------------

    def status(self, i: int) -> dict[str, Any] | None:
        """Member ``i``'s answer to ``/v3/maintenance/status``, or None if it gives none
        within half a second (down, or stopped)."""
        member = self.members[i]
        if member.process is None or i in self.stopped:
            return None
        try:
            response = httpx.post(
                f"{member.url}/v3/maintenance/status",
                json={},
                verify=self._verify,
                timeout=_STATUS_TIMEOUT,
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def current_leader(self) -> int | None:
        """The leader's index now, or None: a running member that says it leads, and
        that a majority of all members (itself included) name as leader.

        Members other than the leader go on naming a dead leader until their election
        timeout runs out; asking the leader itself, and a majority, rules that out.
        """
        claims: dict[int, int] = {}  # member index -> the member id it names as leader
        ids: dict[int, int] = {}
        for i in range(self.size):
            status = self.status(i)
            if status is None:
                continue
            member_id = int(status["header"]["member_id"])
            ids[i] = member_id
            self._member_ids[str(member_id)] = i
            claims[i] = int(status.get("leader", 0))
        for i, member_id in ids.items():
            if claims[i] != member_id:
                continue
            votes = sum(1 for leader in claims.values() if leader == member_id)
            if votes >= self.size // 2 + 1:
                return i
        return None

    def leader_index(self, timeout: float = 10.0) -> int:
        """The leader's index, waiting up to ``timeout`` seconds while there is none.

        :raises TimeoutError: if no leader emerged in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            leader = self.current_leader()
            if leader is not None:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the etcd cluster had no leader within {timeout} s")
            time.sleep(0.05)

    def wait_leader(self, timeout: float = 10.0, *, other_than: int | None = None) -> int:
        """Wait for a leader (other than member ``other_than``, if given); its index.

        :raises TimeoutError: if none emerged in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader_index(max(0.0, deadline - time.monotonic()))
            if leader != other_than:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"member {other_than} was still the etcd leader after {timeout} s"
                )
            time.sleep(0.05)

    # -- faults ---------------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i``: a crash. Its data dir stays for :meth:`restart`."""
        self.members[i].kill()
        self.stopped.discard(i)

    def restart(self, i: int, timeout: float = 20.0) -> None:
        """Start member ``i`` again on its data dir (killing it first if it runs).

        etcd ignores the ``--initial-cluster*`` flags when the data dir has a WAL, and
        restarts the member from it; ``existing`` is passed all the same, as an operator
        would. Waits until the member answers, not until it has caught up.
        """
        member = self.members[i]
        if member.process is not None:
            self.kill(i)
        member.initial_cluster_state = "existing"
        member.start(timeout)

    def stop(self, i: int) -> None:
        """SIGSTOP member ``i``: it hangs, with its sockets open, until :meth:`cont`."""
        process = self.members[i].process
        assert process is not None, f"member {i} is not running"
        process.send_signal(signal.SIGSTOP)
        self.stopped.add(i)

    def cont(self, i: int) -> None:
        """SIGCONT member ``i`` after :meth:`stop`."""
        process = self.members[i].process
        assert process is not None, f"member {i} is not running"
        process.send_signal(signal.SIGCONT)
        self.stopped.discard(i)

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """SIGKILL every member (stopped ones are continued first) and reap them."""
        for i in sorted(self.stopped):
            process = self.members[i].process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
        self.stopped.clear()
        for member in self.members:
            member.kill()

    def terminate(self) -> None:
        """The same as :meth:`close`."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
