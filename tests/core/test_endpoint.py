from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import Endpoint, parse_rendezvous_endpoint, try_parse_port

if TYPE_CHECKING:
    from collections.abc import Callable


def port_error(endpoint: str) -> str:
    return (
        f"The port number of the rendezvous endpoint '{endpoint}' must be an integer "
        "between 0 and 65536."
    )


def host_error(endpoint: str) -> str:
    return (
        f"The hostname of the rendezvous endpoint '{endpoint}' must be a dot-separated list "
        "of labels, an IPv4 address, or an IPv6 address."
    )


def raises_exactly(message: str, func: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        func()


class TestTryParsePort:
    @pytest.mark.parametrize(
        ("text", "port"),
        [("0", 0), ("80", 80), ("29400", 29400), ("65535", 65535), ("99999", 99999), ("00080", 80)],
    )
    def test_one_to_five_ascii_digits(self, text: str, port: int) -> None:
        assert try_parse_port(text) == port

    @pytest.mark.parametrize(
        "text",
        ["", " ", " 80", "80 ", "8 0", "+80", "-1", "123456", "٨٠", "８０", "0x50", "80\n", "\n80"],
    )
    def test_everything_else_is_none(self, text: str) -> None:
        assert try_parse_port(text) is None

    def test_trailing_newline_is_refused_d5(self) -> None:
        # torch returns 80 here; anyrdzv does not (D5).
        assert try_parse_port("80\n") is None

    @pytest.mark.parametrize("value", [80, None, b"80"])
    def test_non_str_is_type_error(self, value: object) -> None:
        with pytest.raises(TypeError, match="port_str must be a str"):
            try_parse_port(value)  # type: ignore[arg-type]

    @given(st.text())
    def test_any_str_gives_int_or_none(self, text: str) -> None:
        is_port = 1 <= len(text) <= 5 and all(c in "0123456789" for c in text)
        assert try_parse_port(text) == (int(text) if is_port else None)


class TestEndpoint:
    def test_is_a_tuple(self) -> None:
        endpoint = parse_rendezvous_endpoint("h:1", 5)
        assert endpoint == ("h", 1)
        host, port = endpoint
        assert (host, port) == ("h", 1)
        assert isinstance(endpoint, Endpoint)
        assert (endpoint.host, endpoint.port) == ("h", 1)

    @pytest.mark.parametrize(
        ("endpoint", "text"),
        [
            (Endpoint("host", 29400), "host:29400"),
            (Endpoint("2001:db8::1", 80), "[2001:db8::1]:80"),
            (Endpoint("fe80::1%eth0", 29400), "[fe80::1%eth0]:29400"),
            (Endpoint("10.0.0.1", 0), "10.0.0.1:0"),
        ],
    )
    def test_str_brackets_ipv6_and_parses_back(self, endpoint: Endpoint, text: str) -> None:
        assert str(endpoint) == text
        assert parse_rendezvous_endpoint(text, 1) == endpoint


class TestParseRendezvousEndpoint:
    @pytest.mark.parametrize("endpoint", [None, "", "   ", "\n\t"])
    def test_empty_is_localhost_with_default_port(self, endpoint: str | None) -> None:
        assert parse_rendezvous_endpoint(endpoint, 29400) == ("localhost", 29400)

    @pytest.mark.parametrize(
        ("endpoint", "expected"),
        [
            ("example.com", ("example.com", 29400)),
            ("example.com:1234", ("example.com", 1234)),
            ("  example.com:1234  ", ("example.com", 1234)),
            ("10.0.0.1:0", ("10.0.0.1", 0)),
            ("h:65535", ("h", 65535)),
            ("h:00080", ("h", 80)),
            ("[::1]", ("::1", 29400)),
            ("[::1]:80", ("::1", 80)),
            ("[2001:db8::1]:29400", ("2001:db8::1", 29400)),
            ("[host]:80", ("host", 80)),
            ("[host]", ("host", 29400)),
            # Accepted as torch accepts them.
            ("hôst", ("hôst", 29400)),
            ("a..b", ("a..b", 29400)),
            ("-host", ("-host", 29400)),
            ("ho_st:1", ("ho_st", 1)),
            ("999.1.1.1", ("999.1.1.1", 29400)),
        ],
    )
    def test_parses_like_torch(self, endpoint: str, expected: tuple[str, int]) -> None:
        assert parse_rendezvous_endpoint(endpoint, 29400) == expected

    def test_default_port_is_not_validated(self) -> None:
        assert parse_rendezvous_endpoint("host", -1) == ("host", -1)
        assert parse_rendezvous_endpoint("host", 1_000_000) == ("host", 1_000_000)

    @pytest.mark.parametrize(
        "endpoint",
        ["h:", "h:65536", "h:99999", "h:123456", "h:-1", "h: 80", "h:+80", "h:x", "h:80\n:"],
    )
    def test_bad_port(self, endpoint: str) -> None:
        raises_exactly(port_error(endpoint.strip()), lambda: parse_rendezvous_endpoint(endpoint, 1))

    def test_port_error_names_the_stripped_endpoint(self) -> None:
        raises_exactly(port_error("h:x"), lambda: parse_rendezvous_endpoint("  h:x \n", 1))

    def test_port_check_comes_before_host_check(self) -> None:
        raises_exactly(port_error("~:x"), lambda: parse_rendezvous_endpoint("~:x", 1))

    @pytest.mark.parametrize(
        "endpoint", ["~", ":123", "dummy.com :123", "http://h:80", "h/x", "[]", "[", "a b", "a%b"]
    )
    def test_bad_host(self, endpoint: str) -> None:
        raises_exactly(host_error(endpoint), lambda: parse_rendezvous_endpoint(endpoint, 1))

    @pytest.mark.parametrize(
        ("endpoint", "host"),
        [
            ("::1", "::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("fe80::1%eth0", "fe80::1%eth0"),
            ("::", "::"),
            (" ::ffff:127.0.0.1 ", "::ffff:127.0.0.1"),
        ],
    )
    def test_d1_bare_ipv6_is_the_host_with_default_port(self, endpoint: str, host: str) -> None:
        # torch: "::1" -> (":", 1) and "2001:db8::1" -> ("2001:db8:", 1).
        assert parse_rendezvous_endpoint(endpoint, 29400) == (host, 29400)

    @pytest.mark.parametrize(
        "endpoint", ["localhost:29400:1", "[:]", "a:b:1", "[h:]:1", "1.2.3.4:5:6"]
    )
    def test_d2_host_with_colon_must_be_ipv6(self, endpoint: str) -> None:
        # torch returns ("localhost:29400", 1) and (":", default) for the first two.
        raises_exactly(host_error(endpoint), lambda: parse_rendezvous_endpoint(endpoint, 1))

    @pytest.mark.parametrize(
        "endpoint", ["host\n:80", "ho\tst:80", "ho\x00st", "[ho\x1fst]:1", "h\u2028:1"]
    )
    def test_d3_whitespace_and_control_in_host_are_refused(self, endpoint: str) -> None:
        # torch returns ("host\n", 80) for the first.
        raises_exactly(host_error(endpoint.strip()), lambda: parse_rendezvous_endpoint(endpoint, 1))

    @pytest.mark.parametrize(
        ("endpoint", "expected"),
        [("[fe80::1%eth0]:29400", ("fe80::1%eth0", 29400)), ("[fe80::1%3]", ("fe80::1%3", 7))],
    )
    def test_d4_zone_id_is_accepted(self, endpoint: str, expected: tuple[str, int]) -> None:
        assert parse_rendezvous_endpoint(endpoint, 7) == expected

    @pytest.mark.parametrize(
        "endpoint", ["[fe80::1%]:1", "[fe80::1%a b]:1", "[fe80::1%a%b]:1", "[fe80::1%a]b]"]
    )
    def test_d4_malformed_zone_is_refused(self, endpoint: str) -> None:
        with pytest.raises(ValueError, match="hostname of the rendezvous endpoint"):
            parse_rendezvous_endpoint(endpoint, 1)

    @pytest.mark.parametrize("value", [1, b"h:1", ("h", 1)])
    def test_non_str_endpoint_is_type_error(self, value: object) -> None:
        with pytest.raises(TypeError, match="endpoint must be a str or None"):
            parse_rendezvous_endpoint(value, 1)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["29400", 1.0, None, True])
    def test_non_int_default_port_is_type_error(self, value: object) -> None:
        with pytest.raises(TypeError, match="default_port must be an int"):
            parse_rendezvous_endpoint("h", value)  # type: ignore[arg-type]


class TestLongInputInErrors:
    """An error echoes at most 300 characters of the endpoint, and then its length."""

    @pytest.mark.parametrize("length", [2, 253, 300])
    def test_up_to_300_characters_are_echoed_whole(self, length: int) -> None:
        endpoint = "~" * length
        raises_exactly(host_error(endpoint), lambda: parse_rendezvous_endpoint(endpoint, 1))
        endpoint = "h" * (length - 2) + ":x"
        raises_exactly(port_error(endpoint), lambda: parse_rendezvous_endpoint(endpoint, 1))

    def test_longer_host_is_cut_with_its_length(self) -> None:
        endpoint = "~" * 100_000
        echoed = "~" * 300 + "... (100000 characters)"
        raises_exactly(host_error(echoed), lambda: parse_rendezvous_endpoint(endpoint, 1))

    def test_longer_port_is_cut_with_its_length(self) -> None:
        endpoint = "h:" + "9" * 100_000
        echoed = "h:" + "9" * 298 + "... (100002 characters)"
        raises_exactly(port_error(echoed), lambda: parse_rendezvous_endpoint(endpoint, 1))

    def test_length_is_of_the_stripped_endpoint(self) -> None:
        endpoint = "  " + "~" * 301 + "\n"
        echoed = "~" * 300 + "... (301 characters)"
        raises_exactly(host_error(echoed), lambda: parse_rendezvous_endpoint(endpoint, 1))

    @given(st.text(min_size=300, max_size=2000))
    def test_message_is_bounded(self, text: str) -> None:
        with pytest.raises(ValueError, match="rendezvous endpoint") as info:
            parse_rendezvous_endpoint("~" + text, 1)
        assert len(str(info.value)) < 500


_MEGABYTE_INPUTS = {
    "name": "a" * 1_000_000,
    "colons": ":" * 1_000_000,
    "bracketed colons": "[" + ":" * 1_000_000 + "]",
    "digits": "1" * 1_000_000,
    "opens": "[" * 1_000_000,
    "unicode": "é" * 1_000_000,
    "hextets": "1:" * 500_000,
    "zone": "fe80::1%" + "a" * 1_000_000,
}


class TestLinearTime:
    @pytest.mark.parametrize("kind", sorted(_MEGABYTE_INPUTS))
    def test_megabyte_input_is_linear(self, kind: str) -> None:
        big = _MEGABYTE_INPUTS[kind]
        small = big[: len(big) // 10]

        def best_of_three(text: str) -> float:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                try:
                    parse_rendezvous_endpoint(text, 1)
                except ValueError:
                    pass
                best = min(best, time.perf_counter() - start)
            return best

        # Ten times the input may cost ten times the time; a quadratic parser would
        # take a hundred times. The slack absorbs timer noise on tiny durations.
        assert best_of_three(big) < 30 * best_of_three(small) + 0.05


_ipv6 = st.ip_addresses(v=6).map(str)
_names = st.from_regex(r"[\w.-]+", fullmatch=True)
_zones = st.from_regex(r"[A-Za-z0-9_.-]{1,15}", fullmatch=True)
_hosts = st.one_of(
    _names,
    st.ip_addresses(v=4).map(str),
    _ipv6,
    st.builds(lambda a, z: f"{a}%{z}", _ipv6, _zones),
)


class TestEndpointProperties:
    @given(st.text(), st.integers(0, 65535))
    def test_any_str_parses_or_raises_value_error(self, text: str, default_port: int) -> None:
        try:
            endpoint = parse_rendezvous_endpoint(text, default_port)
        except ValueError:
            return
        assert isinstance(endpoint, Endpoint)
        assert 0 <= endpoint.port <= 65535
        assert parse_rendezvous_endpoint(str(endpoint), 1) == endpoint

    @given(st.text(alphabet=":[]%.0123456789abcdef \n-é"), st.integers(0, 65535))
    def test_endpoint_like_str_round_trips(self, text: str, default_port: int) -> None:
        try:
            endpoint = parse_rendezvous_endpoint(text, default_port)
        except ValueError:
            return
        assert parse_rendezvous_endpoint(str(endpoint), 1) == endpoint

    @given(_hosts, st.integers(0, 65535))
    def test_str_round_trips(self, host: str, port: int) -> None:
        endpoint = Endpoint(host, port)
        assert parse_rendezvous_endpoint(str(endpoint), 1) == endpoint
