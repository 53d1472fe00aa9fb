"""The shared rules for bodies, outputs and cases (no services needed)."""

from __future__ import annotations

import pytest

from slingshot_runtime.errors import BadOutputError, BadRequestError, UnroutableError
from slingshot_runtime.routing import U64_MAX, case_key, decode_id, encode_id, iter_outputs, route


@pytest.mark.parametrize("body,expected", [(b"0", 0), (b"42", 42), (b"18446744073709551615", U64_MAX), (b"7\n", 7)])
def test_decode_accepts_u64(body: bytes, expected: int) -> None:
    assert decode_id(body) == expected


@pytest.mark.parametrize("body", [b"", b"abc", b"-1", b"18446744073709551616", "١٢".encode(), b"+5", b"1_000", b"0x10", b"1.0"])
def test_decode_rejects_everything_else(body: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        decode_id(body)
    assert info.value.permanent


def test_be64_round_trip() -> None:
    assert decode_id(encode_id(U64_MAX, "be64"), "be64") == U64_MAX
    with pytest.raises(BadRequestError, match="8 bytes"):
        decode_id(b"123", "be64")


def test_cases_differ_by_type() -> None:
    assert len({case_key(True), case_key(1), case_key("true"), case_key("1")}) == 4
    assert case_key(False) != case_key(0)
    with pytest.raises(TypeError):
        case_key(1.5)


@pytest.mark.parametrize(
    "output,fragment",
    [((-1, True), "id must be"), ((2**64, True), "id must be"), ((True, True), "id must be"), (("1", True), "id must be"),
     ((1, 1.5), "case must be"), ((1, None), "case must be"), ((1,), "pair"), ("ab", "pair")],
)
def test_invalid_outputs_are_named(output: object, fragment: str) -> None:
    with pytest.raises(BadOutputError, match=fragment):
        list(iter_outputs([output]))


def test_outputs_accept_generators_lists_tuples_and_none() -> None:
    assert list(iter_outputs(x for x in [(1, True)])) == [(1, True)]
    assert list(iter_outputs([[2, "a"]])) == [(2, "a")]
    assert list(iter_outputs(((3, 0),))) == [(3, 0)]
    assert list(iter_outputs(None)) == []
    with pytest.raises(BadOutputError):
        list(iter_outputs("12"))


def test_route_is_strict() -> None:
    routes = {case_key(True): ("q-bool",), case_key(1): ("q-int",), case_key("true"): ("q-str",)}
    assert [q for _, _, q in route([(5, True), (6, 1), (7, "true")], routes)] == [("q-bool",), ("q-int",), ("q-str",)]
    with pytest.raises(UnroutableError, match=r'case "1" has no route'):
        route([(8, "1")], routes)
    with pytest.raises(UnroutableError):
        route([(9, False)], routes)
