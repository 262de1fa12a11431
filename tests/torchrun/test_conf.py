"""What the torchrun backend reads from --rdzv-endpoint, --rdzv-conf and the environment."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv.torchrun._conf import PASSWORD_VARIABLE, TOPOLOGY_VARIABLE, read_conf

if TYPE_CHECKING:
    from pathlib import Path


def test_defaults_and_torchruns_injected_timeout() -> None:
    conf = read_conf("", {"timeout": 900}, {})
    assert conf.endpoint == "localhost:2379"
    assert conf.rendezvous == {}
    assert (conf.ssl, conf.username, conf.password) == (None, None, None)
    assert (conf.backend, conf.store_timeout) == ("asyncio", 5.0)


def test_rendezvous_keys_pass_through_and_others_are_ignored() -> None:
    config: dict[str, object] = {
        "join_timeout": "60",
        "last_call_timeout": "1",
        "close_timeout": "5",
        "keep_alive_interval": "1",
        "keep_alive_max_attempt": "2",
        "is_host": "1",
        "foo": "bar",
        "timeout": "30",
    }
    conf = read_conf(" h1:2379,h2 ", config, {})
    assert conf.endpoint == "h1:2379,h2"
    assert conf.rendezvous == {
        "join_timeout": "60",
        "last_call_timeout": "1",
        "close_timeout": "5",
        "keep_alive_interval": "1",
        "keep_alive_max_attempt": "2",
    }


def test_user_takes_the_password_from_the_environment() -> None:
    conf = read_conf("h", {"user": "root"}, {PASSWORD_VARIABLE: "s3cret"})
    assert (conf.username, conf.password) == ("root", "s3cret")
    with pytest.raises(ValueError, match=f"'user' is 'root', but {PASSWORD_VARIABLE} is not set"):
        read_conf("h", {"user": "root"}, {})
    with pytest.raises(ValueError, match="'user' is empty"):
        read_conf("h", {"user": ""}, {PASSWORD_VARIABLE: "x"})


def test_a_password_in_the_conf_is_refused_and_not_echoed() -> None:
    with pytest.raises(ValueError, match="'password' is refused") as caught:
        read_conf("h", {"user": "root", "password": "hunter2"}, {})
    assert "hunter2" not in str(caught.value)


def test_tls_files(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("client")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    conf = read_conf(
        "h", {"cacert": str(ca_file), "cert": str(cert_file), "key": str(key_file)}, {}
    )
    assert isinstance(conf.ssl, ssl.SSLContext)
    with pytest.raises(ValueError, match=r"--rdzv-conf cacert '.*nope.pem': no such file"):
        read_conf("h", {"cacert": str(tmp_path / "nope.pem")}, {})
    with pytest.raises(ValueError, match="--rdzv-conf key needs --rdzv-conf cert"):
        read_conf("h", {"key": str(key_file)}, {})
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        read_conf("h", {"cacert": str(key_file)}, {})
    with pytest.raises(ValueError, match="'cert' names no file"):
        read_conf("h", {"cert": ""}, {})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("async_backend", "curio", "'async_backend' must be one of asyncio, uvloop, trio"),
        ("store_timeout", "0", "'store_timeout' must be a positive number of seconds, got '0'"),
        ("store_timeout", "nan", "'store_timeout' must be a positive"),
        ("store_timeout", "soon", "'store_timeout' must be a positive"),
        ("store_timeout", "inf", "'store_timeout' must be a positive"),
    ],
)
def test_bad_values_name_their_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_conf("h", {key: value}, {})


def test_wrong_types() -> None:
    with pytest.raises(TypeError, match="endpoint must be a str"):
        read_conf(None, {}, {})
    with pytest.raises(TypeError, match="'join_timeout' must be a str, got list"):
        read_conf("h", {"join_timeout": [1]}, {})


@given(
    st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=6), st.text(max_size=30)
)
def test_any_conf_of_strings_reads_or_raises_value_error(
    config: dict[str, str], endpoint: str
) -> None:
    try:
        conf = read_conf(endpoint, config, {})
    except ValueError:
        return
    assert set(conf.rendezvous) <= set(config)


def test_unknown_keys_are_named_with_the_nearest_known_key() -> None:
    config: dict[str, object] = {
        "join_timout": "5",
        "keep_alive_intervall": "1",
        "is_host": "1",
        "timeout": 900,  # torchrun's own: known
    }
    conf = read_conf("", config, {})
    assert conf.unknown == (
        ("join_timout", "join_timeout"),
        ("keep_alive_intervall", "keep_alive_interval"),
        ("is_host", None),
    )
    warning = conf.unknown_keys_warning()
    assert warning is not None
    assert warning.startswith(
        "--rdzv-conf: unknown keys 'join_timout' (did you mean 'join_timeout'?), "
        "'keep_alive_intervall' (did you mean 'keep_alive_interval'?), 'is_host', ignored"
    )
    assert read_conf("", {"timeout": 900, "join_timeout": "5"}, {}).unknown_keys_warning() is None


def test_store_messages_in_torchruns_terms() -> None:
    from anyrdzv.torchrun._conf import _LEVERS, in_torchrun_terms

    for python, torchrun in _LEVERS:
        said = in_torchrun_terms(f"etcd at h:1 failed: {python}")
        assert said == f"etcd at h:1 failed: {torchrun}"
        assert "ssl=" not in said
        assert "username" not in said
    assert "--rdzv-conf cacert=" in in_torchrun_terms(_LEVERS[0][0])
    auth = in_torchrun_terms("x (etcd has auth enabled: pass username and password)")
    assert "user=" in auth
    assert PASSWORD_VARIABLE in auth
    assert in_torchrun_terms("nothing to change") == "nothing to change"


def test_rank_order_and_topology_from_the_conf_or_the_environment() -> None:
    conf = read_conf("h", {"rank_order": "stable", "topology": "rack1/sw2"}, {})
    assert conf.rendezvous == {"rank_order": "stable", "topology": "rack1/sw2"}
    # The node's label from the environment, unless the conf gives one.
    assert read_conf("h", {}, {TOPOLOGY_VARIABLE: "rack7"}).rendezvous == {"topology": "rack7"}
    both = read_conf("h", {"topology": "rack1"}, {TOPOLOGY_VARIABLE: "rack7"})
    assert both.rendezvous == {"topology": "rack1"}
    assert read_conf("h", {}, {TOPOLOGY_VARIABLE: ""}).rendezvous == {}
    assert read_conf("", {"timeout": 900, "rank_order": "name"}, {}).unknown_keys_warning() is None


def test_bad_rank_order_or_topology_is_refused_before_any_io() -> None:
    with pytest.raises(
        ValueError, match=r"'rank_order' must be one of natural, stable, name, got 'ip'"
    ):
        read_conf("h", {"rank_order": "ip"}, {})
    with pytest.raises(ValueError, match=r"'topology' must hold no control character"):
        read_conf("h", {}, {TOPOLOGY_VARIABLE: "rack\x1b1"})
