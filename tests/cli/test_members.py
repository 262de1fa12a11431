"""``anyrdzv members``: a group's members on etcd, listed or followed."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, Heartbeat
from tests._support.cli import run_cli, start_cli

if TYPE_CHECKING:
    from tests._support.etcd_cluster import EtcdCluster


@pytest.fixture
def etcd_endpoint(etcd_server: Any) -> str:
    endpoint: str = etcd_server.endpoint
    return endpoint


def members_args(etcd_endpoint: str, key_prefix: str) -> list[str]:
    """``anyrdzv members`` for group ``job`` under this test's own key prefix."""
    return ["members", "--etcd", etcd_endpoint, "--group", "job", "--prefix", key_prefix]


def test_members_lists_a_group(etcd_endpoint: str, key_prefix: str) -> None:
    async def put_members() -> None:
        async with EtcdStore(etcd_endpoint) as store:
            await store.put(f"{key_prefix}/job/members/node-1", b"pid 1")
            await store.put(f"{key_prefix}/job/members/node-0", b"pid 0")

    anyio.run(put_members)
    base = members_args(etcd_endpoint, key_prefix)
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr
    assert "group 'job' at revision" in proc.stdout
    assert "2 member(s)" in proc.stdout
    assert proc.stdout.index("node-0  pid 0") < proc.stdout.index("node-1  pid 1")
    proc = run_cli(*base, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["members"] == {"node-0": "pid 0", "node-1": "pid 1"}


def test_members_takes_an_http_url(etcd_endpoint: str, key_prefix: str) -> None:
    args = members_args(f"http://{etcd_endpoint}", key_prefix)
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["members"] == {}


def test_members_watch_follows_events(etcd_endpoint: str, key_prefix: str) -> None:
    with start_cli(*members_args(etcd_endpoint, key_prefix), "--watch", "--json") as proc:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["members"] == {}

        async def join_and_leave() -> None:
            async with (
                EtcdStore(etcd_endpoint) as store,
                Heartbeat(store, "job", "n1", interval=0.5, prefix=key_prefix),
            ):
                await anyio.sleep(0.2)

        anyio.run(join_and_leave)
        joined = json.loads(proc.stdout.readline())
        left = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert (joined["event"], joined["member"]) == ("JOINED", "n1")
    assert (left["event"], left["member"]) == ("LEFT", "n1")
    assert proc.returncode == 130
    assert "Traceback" not in err


def test_members_watch_ends_cleanly_on_sigterm(etcd_endpoint: str, key_prefix: str) -> None:
    """SIGTERM (what Kubernetes and Slurm send) ends --watch as Ctrl-C does: what was
    printed stays, no traceback, and exit status 143 (128 + SIGTERM), as a shell reports."""
    with start_cli(*members_args(etcd_endpoint, key_prefix), "--watch") as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert first.startswith("group 'job' at revision ")
    assert (proc.returncode, out) == (143, ""), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--etcd", "127.0.0.1:1", "--group", "g", "--timeout", "1"], 1, "cannot reach etcd"),
        (["--etcd", "h:99999", "--group", "g"], 2, "The port number of the rendezvous endpoint"),
        (["--etcd", "h", "--group", "a/b"], 2, "group must be non-empty and contain no '/'"),
        (["--etcd", "h", "--group", "g", "--user", "root"], 2, "--user 'root' needs a password"),
        (["--etcd", "h", "--group", "g", "--user", ":pw"], 2, "--user needs a user name before"),
        (["--etcd", "ftp://h", "--group", "g"], 2, "endpoint must be host[:port] or an http://"),
    ],
)
def test_members_errors(args: list[str], status: int, message: str) -> None:
    proc = run_cli("members", *args)
    assert proc.returncode == status
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ":pw" not in proc.stderr  # a password is never echoed


@pytest.mark.slow
def test_members_takes_the_list(etcd_cluster: EtcdCluster) -> None:
    """``anyrdzv members --etcd LIST`` on a real 3-member cluster, one member down."""
    etcd_cluster.kill(0)
    result = run_cli("members", "--etcd", etcd_cluster.endpoint_list, "--group", "g")
    assert result.returncode == 0, result.stderr
    assert "group 'g' at revision" in result.stdout
