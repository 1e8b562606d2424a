"""The one status -> error mapping, and Retry-After parsing."""

from __future__ import annotations

import pytest

from shared.domain.errors import (
    BadResponseError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ThrottledError,
    classify_status,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (202, None),
        (204, None),
        (429, ThrottledError),
        (500, RetryableError),
        (502, RetryableError),
        (503, RetryableError),
        (504, RetryableError),
        (408, RetryableError),
        (404, NotFoundError),
        (410, NotFoundError),
        (401, ForbiddenError),
        (403, ForbiddenError),
        (301, BadResponseError),
        (302, BadResponseError),
        (400, PermanentError),
        (409, PermanentError),
    ],
)
def test_every_status_lands_in_one_branch_of_the_tree(status, expected):
    error = classify_status(status)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        assert isinstance(error, RetryableError) != isinstance(error, PermanentError)


def test_a_503_with_retry_after_is_throttling_with_its_delay():
    error = classify_status(503, retry_after=7.0)
    assert isinstance(error, ThrottledError) and error.retry_after == 7.0 and error.status == 503


def test_error_codes_are_stable():
    assert classify_status(429).code == "throttled"
    assert classify_status(404).code == "not_found"
    assert classify_status(403).code == "forbidden"
    assert classify_status(400).code == "http_400"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("17", 17.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
