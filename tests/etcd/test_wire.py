"""The etcd gateway's wire format: every decoder reads anything, and raises only ours."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import (
    Compare,
    Delete,
    EventType,
    Get,
    Lease,
    LeaseExpired,
    Put,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    StoreProtocolError,
)
from anyrdzv._etcd import _wire

if TYPE_CHECKING:
    from anyrdzv._stores._txn import TxnOp

_TXN_OPS: tuple[TxnOp, ...] = (Get("/k"), Put("/k", b"v"), Delete("/k", prefix=True))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Objects shaped like the gateway's, with any values in their fields.
int64 = st.one_of(st.integers(), st.text(max_size=25), st.none(), st.booleans())
kv_like = st.fixed_dictionaries(
    {},
    optional={
        "key": st.one_of(st.text(), st.binary().map(_wire.b64), st.integers()),
        "value": st.one_of(st.text(), st.binary().map(_wire.b64)),
        "create_revision": int64,
        "mod_revision": int64,
        "version": int64,
        "lease": int64,
    },
)
header_like = st.one_of(st.fixed_dictionaries({}, optional={"revision": int64}), json_values)
range_like = st.fixed_dictionaries(
    {},
    optional={
        "header": header_like,
        "kvs": st.one_of(st.lists(kv_like, max_size=2), json_values),
        "deleted": int64,
    },
)
txn_response_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "response_put": st.one_of(range_like, json_values),
            "response_range": st.one_of(range_like, json_values),
            "response_delete_range": st.one_of(range_like, json_values),
        },
    ),
)
answer_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "header": header_like,
            "kvs": st.one_of(st.lists(kv_like, max_size=3), json_values),
            "deleted": int64,
            "succeeded": json_values,
            "responses": st.one_of(st.lists(txn_response_like, max_size=3), json_values),
            "ID": int64,
            "TTL": int64,
            "code": int64,
            "message": st.one_of(st.text(), st.integers()),
            "error": json_values,
        },
    ),
)
watch_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "result": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "header": header_like,
                        "created": json_values,
                        "canceled": json_values,
                        "cancel_reason": json_values,
                        "compact_revision": int64,
                        "events": st.one_of(
                            json_values,
                            st.lists(
                                st.fixed_dictionaries(
                                    {}, optional={"type": json_values, "kv": kv_like}
                                ),
                                max_size=3,
                            ),
                        ),
                    },
                ),
            ),
            "error": json_values,
        },
    ),
)


def _decode_all(status: int, content: bytes) -> None:
    """Run every decoder on one answer; they may only return, or raise StoreError."""
    try:
        body = _wire.read_answer("/v3/kv/range", status, content, has_credentials=False)
    except StoreError:
        return
    for decode in (
        lambda: _wire.range_result("/v3/kv/range", body),
        lambda: _wire.revision("/v3/kv/put", body),
        lambda: _wire.grant("/v3/lease/grant", body, 5),
        lambda: _wire.deleted("/v3/kv/deleterange", body),
        lambda: _wire.txn_result("/v3/kv/txn", body),
        lambda: _wire.compare_and_swap_result("/v3/kv/txn", body, "/k"),
        lambda: _wire.txn_answer("/v3/kv/txn", body, _TXN_OPS, _TXN_OPS[:1]),
        lambda: _wire.txn_answer("/v3/kv/txn", body, (), [Get("", prefix=True)]),
        lambda: _wire.status("/v3/maintenance/status", body),
    ):
        try:
            decode()
        except StoreError:
            pass


class TestFuzz:
    @given(st.integers(100, 599), st.binary())
    def test_any_bytes(self, status: int, content: bytes) -> None:
        _decode_all(status, content)

    @given(st.sampled_from([200, 400, 404, 502]), answer_like)
    def test_any_json(self, status: int, body: Any) -> None:
        _decode_all(status, json.dumps(body).encode())

    @given(st.one_of(st.text(), watch_like.map(json.dumps)), st.booleans())
    def test_any_watch_line(self, line: str, has_credentials: bool) -> None:
        try:
            message = _wire.watch_line(line, has_credentials=has_credentials)
        except StoreError:
            return
        assert isinstance(message, _wire.WatchMessage)
        for event in message.events:
            assert isinstance(event.kv.key, bytes)

    @given(st.one_of(st.text(), st.lists(answer_like.map(json.dumps)).map("\n".join)))
    def test_any_renewals(self, text: str) -> None:
        renewed, error = _wire.renewals(text, has_credentials=False)
        assert all(isinstance(k, int) and isinstance(v, int) for k, v in renewed.items())
        assert error is None or isinstance(error, StoreError)

    @given(st.text(), st.booleans())
    def test_any_cancel_reason(self, reason: str, has_credentials: bool) -> None:
        assert isinstance(
            _wire.watch_cancelled(reason, has_credentials=has_credentials), StoreError
        )

    def test_the_empty_prefix_starts_below_every_key(self) -> None:
        assert _wire.prefix_start("") == _wire.b64(b"\0")
        assert _wire.prefix_start("/a") == _wire.b64(b"/a")

    @given(st.text())
    def test_prefix_end_is_above_every_key_with_the_prefix(self, prefix: str) -> None:
        import base64

        end = base64.b64decode(_wire.prefix_end(prefix))
        raw = prefix.encode()
        if raw.rstrip(b"\xff"):
            assert raw < end
            assert raw + b"\xff" * 4 < end


renewal_answers = st.lists(
    st.tuples(st.integers(1, 2**63 - 1), st.integers(0, 2**31 - 1)), unique_by=lambda a: a[0]
)


class TestRenewals:
    @given(renewal_answers, st.sampled_from(["\n", "\r\n", "\n\n"]))
    def test_reads_every_answer(self, pairs: list[tuple[int, int]], sep: str) -> None:
        lines = [json.dumps({"result": {"ID": str(i), "TTL": str(ttl)}}) for i, ttl in pairs]
        assert _wire.renewals(sep.join(lines), has_credentials=False) == (dict(pairs), None)

    @given(
        renewal_answers,
        st.sampled_from(['{"error":{"grpc_code":14,"message":"no leader"}}', "oops", "[1]"]),
    )
    def test_stops_at_an_error(self, pairs: list[tuple[int, int]], bad: str) -> None:
        lines = [json.dumps({"result": {"ID": str(i), "TTL": str(ttl)}}) for i, ttl in pairs]
        renewed, error = _wire.renewals("\n".join([*lines, bad, *lines]), has_credentials=False)
        assert renewed == dict(pairs)
        assert isinstance(error, StoreError)

    def test_a_gone_lease_has_ttl_zero(self) -> None:
        text = '{"result":{"header":{},"ID":"123"}}'
        assert _wire.renewals(text, has_credentials=False) == ({123: 0}, None)

    def test_unavailable_is_a_connection_error(self) -> None:
        text = '{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}'
        _, error = _wire.renewals(text, has_credentials=False)
        assert isinstance(error, StoreConnectionError)


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (
                200,
                {"error": {"grpc_code": 14, "message": "transport is closing"}},
                StoreConnectionError,
            ),
            (
                200,
                {"error": {"grpc_code": 1, "message": "grpc: the client connection is closing"}},
                StoreConnectionError,
            ),
            (503, {"code": 14, "message": "etcdserver: no leader"}, StoreConnectionError),
            (500, {"code": 2, "message": "etcdserver: server stopped"}, StoreConnectionError),
            (500, {"code": 4, "message": "context deadline exceeded"}, StoreConnectionError),
            (500, {"code": 13, "message": "etcdserver: request timed out"}, StoreConnectionError),
            (404, {"code": 5, "message": "etcdserver: requested lease not found"}, LeaseExpired),
            (400, {"code": 3, "message": "etcdserver: user name is empty"}, StorePermissionError),
            (400, {"code": 3, "message": "etcdserver: permission denied"}, StorePermissionError),
            (401, {"code": 16, "message": "nope"}, StorePermissionError),
            (
                400,
                {"code": 3, "message": "etcdserver: duplicate key given in txn request"},
                StoreError,
            ),
        ],
    )
    def test_mapping(self, status: int, body: dict[str, Any], kind: type[StoreError]) -> None:
        error = _wire.error_from_answer("/v3/x", status, body, has_credentials=False)
        assert type(error) is kind

    def test_a_refusal_names_the_keys_and_the_user(self) -> None:
        denied = {"code": 3, "message": "etcdserver: permission denied"}
        get = {"key": _wire.b64_text("/anyrdzv")}
        error = _wire.error_from_answer(
            "/v3/kv/range", 400, denied, has_credentials=True, request=get, user="trainer"
        )
        assert isinstance(error, StorePermissionError)
        assert str(error).startswith(
            "etcd refused /v3/kv/range (key '/anyrdzv') for user 'trainer': "
            "etcdserver: permission denied: no role of user 'trainer' grants it"
        )
        watch = {"create_request": {**_wire.prefix_range("/anyrdzv/job/"), "start_revision": "3"}}
        error = _wire.watch_cancelled(
            "etcdserver: permission denied", has_credentials=True, request=watch, user="u"
        )
        assert "(key under '/anyrdzv/job/') for user 'u'" in str(error)
        txn = {
            "compare": [{"key": _wire.b64_text("/a"), "target": "MOD"}],
            "success": [
                {"request_put": {"key": _wire.b64_text("/b"), "value": _wire.b64(b"/c")}},
                {"request_range": {"key": _wire.b64_text("/a")}},
            ],
        }
        error = _wire.error_from_answer(
            "/v3/kv/txn", 400, denied, has_credentials=True, request=txn, user="u"
        )
        assert "(keys '/a', '/b') for user 'u'" in str(error)
        # No request, no user: as before.
        plain = _wire.error_from_answer("/v3/kv/range", 400, denied, has_credentials=False)
        assert str(plain) == (
            "etcd refused /v3/kv/range: etcdserver: permission denied (etcd has auth enabled: "
            "pass username and password)"
        )

    def test_a_stale_token_is_told_apart_when_we_log_in(self) -> None:
        body = {"code": 3, "message": "etcdserver: invalid auth token"}
        assert isinstance(
            _wire.error_from_answer("/v3/x", 400, body, has_credentials=True), _wire.InvalidToken
        )
        plain = _wire.error_from_answer("/v3/x", 400, body, has_credentials=False)
        assert not isinstance(plain, _wire.InvalidToken)
        assert "pass username and password" in str(plain)

    def test_an_empty_object_names_the_field(self) -> None:
        body = _wire.read_answer("/v3/lease/grant", 200, b"{}", has_credentials=False)
        with pytest.raises(StoreProtocolError, match="'ID'.*not an etcd v3 gateway"):
            _wire.grant("/v3/lease/grant", body, 5)
        with pytest.raises(StoreProtocolError, match="'header'"):
            _wire.range_result("/v3/kv/range", body)

    def test_html_is_not_an_etcd_answer(self) -> None:
        with pytest.raises(StoreProtocolError, match="not JSON.*not an etcd v3 gateway"):
            _wire.read_answer("/v3/kv/range", 200, b"<html>hi</html>", has_credentials=False)

    def test_a_proxy_whose_etcd_is_away_is_a_passing_fault(self) -> None:
        with pytest.raises(StoreConnectionError, match="HTTP 502"):
            _wire.read_answer("/v3/watch", 502, b"<html>Bad Gateway</html>", has_credentials=False)

    def test_an_echo_is_bounded(self) -> None:
        with pytest.raises(StoreProtocolError) as info:
            _wire.read_answer("/v3/kv/range", 200, b"x" * 100_000, has_credentials=False)
        assert len(str(info.value)) < 500


class TestDecoding:
    def test_range_with_omitted_defaults(self) -> None:
        body = {
            "header": {"revision": "7"},
            "kvs": [{"key": _wire.b64(b"/a"), "mod_revision": "5", "create_revision": "5"}],
        }
        kvs, revision = _wire.range_result("/v3/kv/range", body)
        assert revision == 7
        assert kvs == [_wire.RawKeyValue(b"/a", b"", 5, 5, 0, 0)]

    def test_watch_events(self) -> None:
        line = json.dumps(
            {
                "result": {
                    "header": {"revision": "9"},
                    "events": [
                        {
                            "kv": {
                                "key": _wire.b64(b"/k"),
                                "value": _wire.b64(b"v"),
                                "mod_revision": "8",
                            }
                        },
                        {"type": "DELETE", "kv": {"key": _wire.b64(b"/k"), "mod_revision": "9"}},
                    ],
                }
            }
        )
        message = _wire.watch_line(line, has_credentials=False)
        assert message.revision == 9
        assert [e.type for e in message.events] == [EventType.PUT, EventType.DELETE]
        assert message.events[0].kv.value == b"v"

    def test_watch_created(self) -> None:
        message = _wire.watch_line(
            '{"result":{"header":{"revision":"3"},"created":true}}', has_credentials=False
        )
        assert message.created
        assert not message.events

    def test_watch_error_line_unavailable(self) -> None:
        with pytest.raises(StoreConnectionError, match="transport is closing"):
            _wire.watch_line(
                '{"error":{"grpc_code":14,"message":"transport is closing"}}',
                has_credentials=False,
            )


# What etcd 3.4.23 answered to compare_and_swap_request("/z", b"v", 0, None), twice.
_CAS_SUCCEEDED = (
    '{"header":{"cluster_id":"17618817940869414534","member_id":"6101544997737418513",'
    '"revision":"5","raft_term":"2"},"succeeded":true,"responses":[{"response_put":'
    '{"header":{"revision":"5"}}},{"response_range":{"header":{"revision":"5"},"kvs":'
    '[{"key":"L3o=","create_revision":"5","mod_revision":"5","version":"1","value":"dg=="}],'
    '"count":"1"}}]}'
)
_CAS_FAILED = (
    '{"header":{"cluster_id":"17618817940869414534","member_id":"6101544997737418513",'
    '"revision":"5","raft_term":"2"},"responses":[{"response_range":{"header":'
    '{"revision":"5"},"kvs":[{"key":"L3o=","create_revision":"5","mod_revision":"5",'
    '"version":"1","value":"dg=="}],"count":"1"}}]}'
)


class TestTransactions:
    def test_compare_and_swap_request(self) -> None:
        assert _wire.compare_and_swap_request("/z", b"v", 0, None) == {
            "compare": [{"key": "L3o=", "target": "MOD", "result": "EQUAL", "mod_revision": "0"}],
            "success": [
                {"request_put": {"key": "L3o=", "value": "dg=="}},
                {"request_range": {"key": "L3o="}},
            ],
            "failure": [{"request_range": {"key": "L3o="}}],
        }
        with_lease = _wire.compare_and_swap_request("/z", b"", 7, 2**62)
        assert with_lease["success"][0]["request_put"]["lease"] == str(2**62)
        assert with_lease["compare"][0]["mod_revision"] == "7"

    @pytest.mark.parametrize("answer", [_CAS_SUCCEEDED, _CAS_FAILED])
    def test_compare_and_swap_result(self, answer: str) -> None:
        body = json.loads(answer)
        succeeded, kv = _wire.compare_and_swap_result("/v3/kv/txn", body, "/z")
        assert succeeded is (answer is _CAS_SUCCEEDED)
        assert kv == _wire.RawKeyValue(b"/z", b"v", 5, 5, 1, 0)

    def test_a_failed_swap_on_an_absent_key(self) -> None:
        body = {"header": {"revision": "9"}, "responses": [{"response_range": {"header": {}}}]}
        assert _wire.compare_and_swap_result("/v3/kv/txn", body, "/z") == (False, None)

    @pytest.mark.parametrize(
        "body",
        [
            # a success must read the key back
            {"header": {"revision": "9"}, "succeeded": True, "responses": [{"response_put": {}}]},
            {
                "header": {"revision": "9"},
                "succeeded": True,
                "responses": [{"response_put": {}}, {"response_range": {}}],
            },
            # another key than the one asked for
            {
                "header": {"revision": "9"},
                "responses": [{"response_range": {"kvs": [{"key": "L2E="}]}}],
            },
            {"header": {"revision": "9"}, "succeeded": "yes", "responses": []},
            {
                "header": {"revision": "9"},
                "responses": [{"response_range": {}, "response_put": {}}],
            },
        ],
    )
    def test_a_malformed_swap_answer(self, body: dict[str, Any]) -> None:
        with pytest.raises(StoreProtocolError):
            _wire.compare_and_swap_result("/v3/kv/txn", body, "/z")

    def test_txn_result(self) -> None:
        result = _wire.txn_result("/v3/kv/txn", json.loads(_CAS_SUCCEEDED))
        assert result.succeeded
        assert result.revision == 5
        assert [r.kind for r in result.responses] == ["response_put", "response_range"]

    def test_deleted(self) -> None:
        assert _wire.deleted("/v3/kv/deleterange", {"header": {"revision": "4"}}) == (0, 4)
        body = {"header": {"revision": "5"}, "deleted": "2"}
        assert _wire.deleted("/v3/kv/deleterange", body) == (2, 5)
        with pytest.raises(StoreProtocolError, match="'deleted'"):
            _wire.deleted("/v3/kv/deleterange", {"header": {"revision": "5"}, "deleted": "-1"})


# What etcd 3.4.23 answered to txn_request((), [Get("/w"), Put("/w", b"w2"), Get("/w")], ()).
_TXN_GET_PUT_GET = (
    '{"header":{"cluster_id":"13169873128079741191","member_id":"6319105831095131208",'
    '"revision":"7","raft_term":"2"},"succeeded":true,"responses":[{"response_range":'
    '{"header":{"revision":"6"},"kvs":[{"key":"L3c=","create_revision":"6",'
    '"mod_revision":"6","version":"1","value":"dw=="}],"count":"1"}},{"response_put":'
    '{"header":{"revision":"7"}}},{"response_range":{"header":{"revision":"7"},"kvs":'
    '[{"key":"L3c=","create_revision":"6","mod_revision":"7","version":"2",'
    '"value":"dzI="}],"count":"1"}}]}'
)
# ... and to txn_request([a failing comparison], [...], [Get("/a")]).
_TXN_FAILED = (
    '{"header":{"cluster_id":"13169873128079741191","member_id":"6319105831095131208",'
    '"revision":"2","raft_term":"2"},"responses":[{"response_range":{"header":'
    '{"revision":"2"},"kvs":[{"key":"L2E=","create_revision":"2","mod_revision":"2",'
    '"version":"1","value":"MQ=="}],"count":"1"}}]}'
)


class TestTxn:
    def test_request_of_every_comparison(self) -> None:
        compares = [
            Compare.value("/k", "==", b"v"),
            Compare.version("/k", "!=", 0),
            Compare.create_revision("/k", "<", 3),
            Compare.mod_revision("/k", ">", 2**62),
            Compare.lease("/k", "==", Lease(2**62 + 1, 10)),
            Compare.lease("/k", "==", None),
            Compare.value("/k", "==", b""),
        ]
        assert _wire.txn_request(compares, (), ())["compare"] == [
            {"key": "L2s=", "target": "VALUE", "result": "EQUAL", "value": "dg=="},
            {"key": "L2s=", "target": "VERSION", "result": "NOT_EQUAL", "version": "0"},
            {"key": "L2s=", "target": "CREATE", "result": "LESS", "create_revision": "3"},
            {"key": "L2s=", "target": "MOD", "result": "GREATER", "mod_revision": str(2**62)},
            {"key": "L2s=", "target": "LEASE", "result": "EQUAL", "lease": str(2**62 + 1)},
            # Zeros and empty values are sent, not left to proto3's defaults.
            {"key": "L2s=", "target": "LEASE", "result": "EQUAL", "lease": "0"},
            {"key": "L2s=", "target": "VALUE", "result": "EQUAL", "value": ""},
        ]

    def test_request_of_every_operation(self) -> None:
        ops: list[TxnOp] = [
            Put("/k", b"v"),
            Put("/l", b"", Lease(7, 10)),
            Delete("/k"),
            Delete("/p/", prefix=True),
            Get("/k"),
            Get("", prefix=True),
        ]
        request = _wire.txn_request((), ops, ops[4:])
        assert request == {
            "compare": [],
            "success": [
                {"request_put": {"key": "L2s=", "value": "dg=="}},
                {"request_put": {"key": "L2w=", "value": "", "lease": "7"}},
                {"request_delete_range": {"key": "L2s="}},
                {"request_delete_range": {"key": "L3Av", "range_end": "L3Aw"}},
                {"request_range": {"key": "L2s="}},
                {"request_range": {"key": "AA==", "range_end": "AA=="}},
            ],
            "failure": [
                {"request_range": {"key": "L2s="}},
                {"request_range": {"key": "AA==", "range_end": "AA=="}},
            ],
        }
        assert json.loads(_wire.encode(request)) == request

    def test_answer_of_a_success(self) -> None:
        ops = (Get("/w"), Put("/w", b"w2"), Get("/w"))
        answer = _wire.txn_answer("/v3/kv/txn", json.loads(_TXN_GET_PUT_GET), ops, ())
        assert answer.succeeded
        assert answer.revision == 7
        assert [r.kind for r in answer.responses] == [
            "response_range",
            "response_put",
            "response_range",
        ]
        assert answer.responses[0].kvs == (_wire.RawKeyValue(b"/w", b"w", 6, 6, 1, 0),)
        assert answer.responses[2].kvs == (_wire.RawKeyValue(b"/w", b"w2", 6, 7, 2, 0),)

    def test_a_failure_has_no_succeeded(self) -> None:
        # proto3 leaves "succeeded": false out; the failure branch's answers follow.
        answer = _wire.txn_answer(
            "/v3/kv/txn", json.loads(_TXN_FAILED), (Put("/a", b"2"),), (Get("/a"),)
        )
        assert not answer.succeeded
        assert answer.revision == 2
        assert answer.responses[0].kvs == (_wire.RawKeyValue(b"/a", b"1", 2, 2, 1, 0),)

    def test_proto3_leaves_out_empty_answers(self) -> None:
        # An empty branch has no "responses", an empty range no "kvs", a delete of
        # nothing no "deleted".
        answer = _wire.txn_answer("/v3/kv/txn", {"header": {"revision": "11"}}, [Get("/a")], ())
        assert (answer.succeeded, answer.revision, answer.responses) == (False, 11, ())
        body = {
            "header": {"revision": "4"},
            "succeeded": True,
            "responses": [
                {"response_delete_range": {"header": {"revision": "4"}}},
                {"response_range": {"header": {"revision": "4"}}},
            ],
        }
        answer = _wire.txn_answer("/v3/kv/txn", body, (Delete("/x"), Get("/x")), ())
        assert [(r.deleted, r.kvs) for r in answer.responses] == [(0, ()), (0, ())]

    def test_deleted_counts(self) -> None:
        body = {
            "header": {"revision": "9"},
            "succeeded": True,
            "responses": [{"response_delete_range": {"header": {}, "deleted": "4"}}],
        }
        answer = _wire.txn_answer("/v3/kv/txn", body, (Delete("/m", prefix=True),), ())
        assert answer.responses[0].deleted == 4

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"succeeded": True}, "header"),
            ({"header": {"revision": "x"}, "succeeded": True}, "revision"),
            ({"header": {"revision": "3"}, "succeeded": 1}, "succeeded"),
            # one answer too few, or too many, for the branch that ran
            ({"header": {"revision": "3"}, "succeeded": True}, "responses"),
            (
                {
                    "header": {"revision": "3"},
                    "responses": [{"response_range": {}}, {"response_range": {}}],
                },
                "responses",
            ),
            # the wrong kind of answer for the operation
            (
                {
                    "header": {"revision": "3"},
                    "succeeded": True,
                    "responses": [{"response_put": {}}],
                },
                "responses",
            ),
            ({"header": {"revision": "3"}, "responses": [{"response_range": {}}]}, "responses"),
            (
                {
                    "header": {"revision": "3"},
                    "succeeded": True,
                    "responses": [{"response_range": {}, "response_put": {}}],
                },
                "responses",
            ),
            # a single key's read with another key, or two
            (
                {
                    "header": {"revision": "3"},
                    "succeeded": True,
                    "responses": [{"response_range": {"kvs": [{"key": "L2I="}]}}],
                },
                "kvs",
            ),
            (
                {
                    "header": {"revision": "3"},
                    "succeeded": True,
                    "responses": [{"response_range": {"kvs": [{"key": "L2E="}, {"key": "L2E="}]}}],
                },
                "kvs",
            ),
            (
                {
                    "header": {"revision": "3"},
                    "succeeded": True,
                    "responses": [{"response_range": {"kvs": [{"key": "L2E=", "version": "a"}]}}],
                },
                "version",
            ),
        ],
    )
    def test_a_malformed_answer(self, body: dict[str, Any], field: str) -> None:
        with pytest.raises(StoreProtocolError, match=f"no valid {field!r}"):
            _wire.txn_answer("/v3/kv/txn", body, [Get("/a")], [Put("/a", b"")])

    def test_a_prefix_read_outside_its_prefix(self) -> None:
        body = {
            "header": {"revision": "3"},
            "responses": [{"response_range": {"kvs": [{"key": "L3AvYQ=="}, {"key": "L3E="}]}}],
        }
        with pytest.raises(StoreProtocolError, match="no valid 'kvs'"):
            _wire.txn_answer("/v3/kv/txn", body, (), [Get("/p/", prefix=True)])
        body["responses"] = [{"response_range": {"kvs": [{"key": "L3AvYQ=="}]}}]
        answer = _wire.txn_answer("/v3/kv/txn", body, (), [Get("/p/", prefix=True)])
        assert answer.responses[0].kvs[0].key == b"/p/a"

    def test_a_negative_count(self) -> None:
        body = {
            "header": {"revision": "3"},
            "responses": [{"response_delete_range": {"deleted": "-1"}}],
        }
        with pytest.raises(StoreProtocolError, match="no valid 'deleted'"):
            _wire.txn_answer("/v3/kv/txn", body, (), [Delete("/a")])


class TestStatus:
    # As etcd 3.4.23 answers, with a leader and without (quorum lost).
    HEALTHY = (
        '{"header":{"cluster_id":"10552232486176467958","member_id":"18368221186354000029",'
        '"revision":"1","raft_term":"2"},"version":"3.4.23","dbSize":"24576",'
        '"leader":"15346354943487511336","raftIndex":"11","raftTerm":"2",'
        '"raftAppliedIndex":"11","dbSizeInUse":"16384"}'
    )
    NO_LEADER = (
        '{"header":{"cluster_id":"10552232486176467958","member_id":"18368221186354000029",'
        '"revision":"1","raft_term":"2"},"version":"3.4.23","dbSize":"24576",'
        '"raftIndex":"11","raftTerm":"2","raftAppliedIndex":"11",'
        '"errors":["etcdserver: no leader"],"dbSizeInUse":"16384"}'
    )

    def test_healthy(self) -> None:
        raw = _wire.status("/s", json.loads(self.HEALTHY))
        assert raw == _wire.RawStatus(
            member_id=18368221186354000029,
            leader=15346354943487511336,
            version="3.4.23",
            db_size=24576,
            raft_term=2,
            errors=(),
        )

    def test_no_leader(self) -> None:
        raw = _wire.status("/s", json.loads(self.NO_LEADER))
        assert raw.leader == 0
        assert raw.errors == ("etcdserver: no leader",)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "header"),
            ({"header": {}}, "member_id"),
            ({"header": {"member_id": "1"}, "version": 3}, "version"),
            ({"header": {"member_id": "1"}, "errors": "x"}, "errors"),
            ({"header": {"member_id": "1"}, "leader": "x"}, "leader"),
        ],
    )
    def test_malformed(self, body: dict[str, Any], field: str) -> None:
        with pytest.raises(StoreProtocolError, match=field):
            _wire.status("/s", body)


def test_time_to_live_answer() -> None:
    path = "/v3/lease/timetolive"
    assert _wire.time_to_live(path, {"ID": "7", "TTL": "5", "grantedTTL": "10"}) == 5
    assert _wire.time_to_live(path, {"ID": "7", "TTL": 0}) == 0
    assert _wire.time_to_live(path, {"ID": "7", "TTL": "-1"}) is None
    assert _wire.time_to_live(path, {"ID": "7"}) is None
    for bad in ("soon", True, 1.5, ["5"]):
        with pytest.raises(StoreProtocolError, match="TTL"):
            _wire.time_to_live(path, {"ID": "7", "TTL": bad})
