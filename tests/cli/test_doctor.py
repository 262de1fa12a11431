"""``anyrdzv doctor``: the host check, and the report on an etcd cluster (``--etcd``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from anyrdzv._cli._main import main
from tests._support.cli import run_cli

if TYPE_CHECKING:
    from tests._support.etcd_cluster import EtcdCluster


def test_doctor_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--rdzv-endpoint", "127.0.0.1:1234"]) == 0
    out = capsys.readouterr().out
    assert "endpoint:   127.0.0.1:1234" in out
    assert "interfaces:" in out
    assert "decision:   this node HOSTS the store (matches=True)" in out
    assert "rule:       loopback: 127.0.0.1 is a loopback address" in out


def test_doctor_json_for_an_unresolvable_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["doctor", "--rdzv-endpoint", "no-such-host.invalid", "--timeout", "3", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["endpoint"] == {
        "host": "no-such-host.invalid",
        "port": 29400,
        "str": "no-such-host.invalid:29400",
    }
    assert report["identity"]["interfaces"]
    assert report["decision"]["matches"] is False
    assert report["decision"]["rule"] in {"unresolvable", "timeout"}
    assert report["decision"]["elapsed"] >= 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rdzv-endpoint", "h:x"], "The port number of the rendezvous endpoint 'h:x'"),
        (["--rdzv-endpoint", "h", "--timeout", "-1"], "timeout must be positive or None"),
    ],
)
def test_doctor_bad_input_exits_2_without_traceback(args: list[str], message: str) -> None:
    proc = run_cli("doctor", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
class TestDoctorEtcd:
    """``anyrdzv doctor --etcd LIST`` on a real 3-member cluster."""

    def test_a_healthy_cluster(self, etcd_cluster: EtcdCluster) -> None:
        result = run_cli("doctor", "--etcd", etcd_cluster.endpoint_list)
        assert result.returncode == 0, result.stderr
        leader = etcd_cluster.endpoints[etcd_cluster.leader_index()]
        assert f"quorum: yes (3 of 3 members answer; leader {leader})" in result.stdout
        for endpoint in etcd_cluster.endpoints:
            assert f"{endpoint}  yes" in result.stdout
        assert "3.4" in result.stdout
        report = json.loads(
            run_cli("doctor", "--json", "--etcd", etcd_cluster.endpoint_list).stdout
        )
        assert report["quorum"] is True
        assert report["leader"] == leader
        assert [m["leader"] for m in report["members"]].count(True) == 1
        assert all(m["reachable"] and m["db_size"] > 0 for m in report["members"])
        assert all(m["raft_term"] >= 1 and m["latency_ms"] > 0 for m in report["members"])

    def test_no_quorum_exits_non_zero(self, etcd_cluster: EtcdCluster) -> None:
        leader = etcd_cluster.leader_index()
        other = (leader + 1) % 3
        etcd_cluster.kill(leader)
        etcd_cluster.kill(other)
        started = time.monotonic()
        result = run_cli("doctor", "--etcd", etcd_cluster.endpoint_list, "--timeout", "2")
        assert time.monotonic() - started < 15
        assert result.returncode == 1
        assert "quorum: NO (1 of 3 members answer" in result.stdout
        assert f"{etcd_cluster.endpoints[leader]}: cannot reach etcd" in result.stdout
        # The survivor still names the dead leader until its election timeout, then
        # reports "no leader": a minority either way.

    def test_nothing_answers(self, etcd_cluster: EtcdCluster) -> None:
        etcd_cluster.close()
        result = run_cli("doctor", "--json", "--etcd", etcd_cluster.endpoint_list)
        assert result.returncode == 1
        report = json.loads(result.stdout)
        assert report["quorum"] is False
        assert not any(m["reachable"] for m in report["members"])

    @pytest.mark.parametrize(
        ("etcd", "message"),
        [
            ("h1:2379,,h3", "empty member (number 2)"),
            ("h1,h2:99999", "etcd member 'h2:99999' in the list"),
            ("h1,h1:2379", "lists etcd member 'h1:2379' twice"),
        ],
    )
    def test_a_bad_list_is_a_usage_error(self, etcd: str, message: str) -> None:
        result = run_cli("doctor", "--etcd", etcd)
        assert result.returncode == 2
        assert message in result.stderr
