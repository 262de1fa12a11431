"""``anyrdzv doctor``: the host check, and the report on an etcd cluster (``--etcd``)."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

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


def test_the_skew_bound_intersects_the_answers() -> None:
    from anyrdzv._cli._doctor import skew_bound

    # etcd is 2.3 s ahead: answers at several fractions of a second narrow the bound.
    samples = []
    for sent in (100.0, 100.25, 100.5, 100.75):
        received = sent + 0.01
        samples.append((sent, received, float(int(sent + 0.005 + 2.3))))
    bound = skew_bound(samples)
    assert bound is not None
    offset, error = bound
    assert offset - error <= 2.3 <= offset + error
    assert error < 0.2
    assert skew_bound([(100.0, 100.1, 105.0), (100.2, 100.3, 90.0)]) is None  # a step


def scoped_etcd(server: Any) -> None:
    """Auth on, with user 'trainer' granted readwrite on /anyrdzv/job/ only."""
    import shutil
    import subprocess

    if shutil.which("etcdctl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("etcdctl is not installed (apt-get install etcd-client)")
        pytest.skip("etcdctl is not installed (apt-get install etcd-client)")
    for args in (
        ["user", "add", "root:rootpw"],
        ["user", "grant-role", "root", "root"],
        ["role", "add", "job"],
        ["role", "grant-permission", "job", "--prefix=true", "readwrite", "/anyrdzv/job/"],
        ["user", "add", "trainer:pw"],
        ["user", "grant-role", "trainer", "job"],
        ["auth", "enable"],
    ):
        done = subprocess.run(
            ["etcdctl", f"--endpoints={server.url}", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (args, done.stderr)


class TestDoctorTheEtcdBackend:
    """``anyrdzv doctor --rdzv-backend anyrdzv-etcd``: what torchrun's backend needs."""

    def test_a_plain_etcd(self, etcd_server: Any) -> None:
        result = run_cli(
            "doctor", "--rdzv-backend", "anyrdzv-etcd", "--rdzv-endpoint", etcd_server.endpoint
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"backend:     anyrdzv-etcd on etcd {etcd_server.endpoint}")
        assert lines[1] == (
            f"etcd:        1 of 1 member(s) answer; quorum, leader {etcd_server.endpoint}"
        )
        assert lines[2] == "auth:        off"
        assert lines[3].startswith("permissions: read, write, watch and lease under /anyrdzv/")
        assert lines[4].startswith(f"clock:       {etcd_server.endpoint} is ")
        assert "WARNING" not in lines[4]  # one machine, one clock
        assert lines[-1] == "verdict:     OK"
        assert "HOSTS the store" not in result.stdout  # not the c10d question

    @pytest.mark.parametrize("form", ["url", "list"])
    def test_the_backends_endpoint_forms(self, etcd_server: Any, form: str) -> None:
        """torchrun's forms for this backend: an http:// URL, a list (here with a member
        that does not answer: no quorum, exit status 1, but no usage error)."""
        endpoint = (
            f"http://{etcd_server.endpoint}"
            if form == "url"
            else f"{etcd_server.endpoint},127.0.0.1:1"
        )
        result = run_cli("doctor", "--rdzv-endpoint", endpoint, "--timeout", "2", "--json")
        assert result.returncode == (0 if form == "url" else 1), result.stderr
        report = json.loads(result.stdout)
        assert report["backend"] == "anyrdzv-etcd"
        assert report["checks"]["permissions"]["ok"] is True
        assert report["checks"]["etcd"]["ok"] is (form == "url")
        clock = report["clock"][0]
        assert abs(clock["offset"]) <= clock["error"] + 0.5
        assert clock["error"] < 1

    def test_a_scoped_user(self, own_etcd_server: Any) -> None:
        scoped_etcd(own_etcd_server)
        common = ["doctor", "--rdzv-backend", "anyrdzv-etcd", "--rdzv-endpoint"]
        common.append(own_etcd_server.endpoint)
        no_user = run_cli(*common, "--rdzv-id", "job")
        assert no_user.returncode == 1
        assert "auth ON, and no --user was given" in no_user.stdout
        assert "--rdzv-conf user=NAME" in no_user.stdout
        password = {"ANYRDZV_ETCD_PASSWORD": "pw"}
        ok = run_cli(*common, "--rdzv-id", "job", "--user", "trainer", env=password)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "auth:        on; user 'trainer' logged in" in ok.stdout
        assert "permissions: read, write, watch and lease under /anyrdzv/job/: OK" in ok.stdout
        other = run_cli(*common, "--rdzv-id", "other", "--user", "trainer", env=password)
        assert other.returncode == 1
        assert (
            "permissions: FAILED under /anyrdzv/other/: etcd refused /v3/kv/range "
            "(key '/anyrdzv/other/') for user 'trainer': etcdserver: permission denied"
        ) in other.stdout
        assert other.stdout.splitlines()[-1] == "verdict:     FAILED"
