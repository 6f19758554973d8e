"""HTTP parsing of the API: every malformed body, header and query value is a 400/413 naming its field."""

from __future__ import annotations

import base64

import pytest

from wanflow.errors import InvalidRequest, NotFound, PayloadTooLarge
from wanflow.http import MAX_BODY_BYTES, batch_id_from_path, idempotency_key_of, list_query, page_query, parse_json_body
from wanflow.jobs import JobStatus


def field_of(error: pytest.ExceptionInfo[InvalidRequest]) -> list[str]:
    return [item.field for item in error.value.errors]


@pytest.mark.parametrize(
    ("raw", "base64_encoded", "message"),
    [
        (None, False, "is empty"),
        ("", False, "is empty"),
        ("{oops", False, "is not valid JSON"),
        (base64.b64encode(b"\xff").decode(), True, "is not UTF-8"),
        ("not base64!", True, "is not UTF-8"),
        ("\udcff", False, "is not UTF-8"),  # a lone surrogate, as a non-UTF-8 byte decodes to
        ("[" * 100_000 + "]" * 100_000, False, "nested more than 32 levels"),
        ('{"a": ' * 33 + "1" + "}" * 33, False, "nested more than 32 levels"),
    ],
)
def test_bodies_that_are_not_json_objects_name_the_body(raw: str | None, base64_encoded: bool, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_json_body(raw, base64_encoded=base64_encoded)
    assert field_of(refused) == ["body"] and message in refused.value.errors[0].message


def test_json_up_to_the_depth_limit_and_base64_bodies_parse() -> None:
    assert parse_json_body('{"a": ' * 31 + "1" + "}" * 31, base64_encoded=False) is not None
    assert parse_json_body(base64.b64encode(b'{"x": "\xc3\xa9"}').decode(), base64_encoded=True) == {"x": "é"}


def test_a_body_over_the_limit_is_413_before_it_is_parsed() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_json_body("x" * (MAX_BODY_BYTES + 1), base64_encoded=False)
    with pytest.raises(PayloadTooLarge):
        parse_json_body("x" * (MAX_BODY_BYTES * 4 // 3 + 8), base64_encoded=True)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"status": ""}, ["status"]),
        ({"status": "DONE"}, ["status"]),
        ({"limit": ""}, ["limit"]),
        ({"limit": "0"}, ["limit"]),
        ({"limit": "101"}, ["limit"]),
        ({"limit": "1e2"}, ["limit"]),
        ({"limit": "99999999999999999999"}, ["limit"]),
        ({"limit": "\u00b2"}, ["limit"]),  # a digit to str.isdigit(), not to int()
        ({"cursor": ""}, ["cursor"]),
        ({"status": "", "limit": "-1"}, ["status", "limit"]),
    ],
)
def test_bad_list_parameters_name_themselves(query: dict[str, str], fields: list[str]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        list_query(query)
    assert field_of(refused) == fields


def test_good_list_parameters() -> None:
    assert list_query({}) == (None, 20, None)
    assert list_query({"status": "succeeded", "limit": "100", "cursor": "abc"}) == (JobStatus.SUCCEEDED, 100, "abc")


def test_batch_pages_take_a_limit_up_to_their_own_most_and_a_cursor() -> None:
    assert page_query({}, default=100, most=1000) == (100, None)
    assert page_query({"limit": "1000", "cursor": "c"}, default=100, most=1000) == (1000, "c")
    for query in ({"limit": "1001"}, {"limit": "0"}, {"limit": "ten"}, {"cursor": ""}):
        with pytest.raises(InvalidRequest) as refused:
            page_query(query, default=100, most=1000)
        assert [error.field for error in refused.value.errors] == list(query)


def test_a_batch_id_that_cannot_be_one_is_not_found() -> None:
    assert batch_id_from_path("a" * 32) == "a" * 32
    with pytest.raises(NotFound):
        batch_id_from_path("../jobs")


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\tinside", "caf\u00e9"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        idempotency_key_of({"idempotency-key": key})
    assert field_of(refused) == ["Idempotency-Key"]


def test_good_idempotency_keys() -> None:
    assert idempotency_key_of({}) is None
    assert idempotency_key_of({"idempotency-key": "k" * 255}) == "k" * 255
