"""The logging layer redacts secrets and personal identifiers itself, whatever code or library wrote them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logs import (
    JsonLineFormatter,
    RedactingFilter,
    configure_logging,
    protect_existing_handlers,
    redact,
    request_context,
)

TOKEN = "tok-8f3Kq9ZtW2xV7bN4mL1pR6sD0"
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJvaWQiOiJhYWFhIiwidXBuIjoiamFuZSJ9.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        (f"authorization=Bearer {TOKEN}", TOKEN),
        (f"Authorization: Basic {TOKEN}", TOKEN),
        (f"{{'Authorization': 'Bearer {TOKEN}'}}", TOKEN),
        (f'{{"authorization": "SharedKey devstoreaccount1:{TOKEN}"}}', TOKEN),
        (f"bearer {TOKEN}", TOKEN),
        (JWT, JWT.split(".")[1]),
        (f"token {JWT} expired", JWT.split(".")[2]),
        (f"https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2026&sr=b&sp=r&sig={TOKEN}", TOKEN),
        (f"https://acct.blob.core.windows.net/c/b?skoid=x&sktid=y&skt=z&ske=w&sks=b&skv=v&sig={TOKEN}", TOKEN),
        (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={TOKEN}==;EndpointSuffix=core.windows.net", TOKEN),
        (f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey={TOKEN}", TOKEN),
        (f"SharedAccessSignature=sv=2019&sig={TOKEN}", TOKEN),
        (f'{{"access_token": "{TOKEN}", "expires_on": "1700000000"}}', TOKEN),
        (f'{{"access_token":"{TOKEN}"}}', TOKEN),
        (f"{{'access_token': '{TOKEN}'}}", TOKEN),  # a Python repr
        (json.dumps(json.dumps({"access_token": TOKEN})), TOKEN),  # JSON inside a JSON string
        (f'{{"refresh_token": "{TOKEN}"}}', TOKEN),
        (f'{{"client_secret": "{TOKEN}"}}', TOKEN),
        (f"client_secret={TOKEN}&grant_type=client_credentials", TOKEN),
        (f"access_token={TOKEN}", TOKEN),
        (f"code={TOKEN}", TOKEN),
        (f"X-IDENTITY-HEADER: {TOKEN}", TOKEN),
        (f"x-identity-header={TOKEN}", TOKEN),
        (f'{{"X-IDENTITY-HEADER": "{TOKEN}"}}', TOKEN),
        (f"IDENTITY_HEADER={TOKEN}", TOKEN),
        (f"MSI_SECRET={TOKEN}", TOKEN),
        (f'{{"accountKey": "{TOKEN}"}}', TOKEN),
        (f'{{"credential": "{TOKEN}"}}', TOKEN),
        (f'{{"sasToken": "?sv=2019-02-02&sig={TOKEN}"}}', TOKEN),
        (f'{{"clientSecret": "{TOKEN}"}}', TOKEN),
        (f'{{"password": "{TOKEN}"}}', TOKEN),
        (f"password: {TOKEN}", TOKEN),
        (f"https://h/p?$skiptoken={TOKEN}&api-version=1", TOKEN),
        (f"https://h/p?continuationToken={TOKEN}", TOKEN),
        ("the reviewer is jane.doe@contoso.com", "jane.doe@contoso.com"),
        ('{"upn": "john.roe@contoso.com"}', "john.roe@contoso.com"),
    ],
)
def test_redact_removes_the_secret(text, secret):
    assert secret not in redact(text)
    assert "REDACTED" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "request accepted",
        "https://h/p?api-version=2024-04-01&includeSecret=false",
        '{"secretsRedacted": 3, "calls": 12}',
        "retrying GET /subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/x",
        "the identity lacks the right: access denied (HTTP 403): AuthorizationFailed",
        "workspace_delete_unconfirmed",
    ],
)
def test_redact_leaves_ordinary_text_alone(text):
    assert redact(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_redact_never_raises_and_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9._~+/-]{12,64}", fullmatch=True), st.text(max_size=30), st.text(max_size=30))
def test_a_bearer_token_is_removed_whatever_surrounds_it(token, before, after):
    for shape in (
        f"Authorization: Bearer {token}",
        json.dumps({"access_token": token}),
        json.dumps({"headers": {"Authorization": f"Bearer {token}"}}),
        f"sig={token}",
    ):
        assert token not in redact(before + " " + shape + " " + after)


# -- the filter and the formatter -----------------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("dsr.test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_filter_redacts_the_message_its_arguments_and_every_extra(capture):
    logger, stream = capture
    logger.info(
        "calling %s with %s",
        "https://h/p?sig=" + TOKEN,
        {"Authorization": "Bearer " + TOKEN},
        extra={
            "url": f"https://h/p?sig={TOKEN}",
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "urls": [f"https://h/p?sig={TOKEN}"],
            "pairs": (("Authorization", f"Bearer {TOKEN}"),),
        },
    )
    text = stream.getvalue()
    assert TOKEN not in text
    [entry] = lines(stream)
    assert entry["url"] == "https://h/p?[REDACTED-SAS]"  # a signed query goes whole
    assert entry["headers"] == {"Authorization": "[REDACTED]"}


def test_a_secret_in_an_exception_is_neither_printed_nor_its_traceback(capture):
    logger, stream = capture
    try:
        raise RuntimeError(f"GET https://h/p?sig={TOKEN} failed: Bearer {TOKEN}")
    except RuntimeError:
        logger.exception("call failed")
    [entry] = lines(stream)
    assert entry["error"] == "RuntimeError"  # the type only
    assert "Traceback" not in stream.getvalue() and TOKEN not in stream.getvalue()


def test_a_handler_we_do_not_own_prints_a_redacted_traceback():
    # the Functions host installs its own handler and formatter, which print tracebacks
    stream = io.StringIO()
    foreign = logging.StreamHandler(stream)
    foreign.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(foreign)
    try:
        protect_existing_handlers()
        protect_existing_handlers()  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in foreign.filters) == 1
        try:
            raise ValueError(f"AccountKey={TOKEN};")
        except ValueError:
            logging.getLogger("dsr.test.foreign").error("x %s", f"Bearer {TOKEN}", exc_info=True)
    finally:
        root.removeHandler(foreign)
    text = stream.getvalue()
    assert "Traceback" in text and "ValueError" in text  # the host's format keeps its traceback ...
    assert TOKEN not in text  # ... without the secret


def test_a_broken_format_string_does_not_lose_the_line(capture):
    logger, stream = capture
    logger.info("%s and %s", "one")
    [entry] = lines(stream)
    assert "one" in str(entry["message"])


def test_every_line_is_json_with_the_request_id_of_its_context(capture):
    logger, stream = capture
    with request_context("TCK-1"):
        logger.warning("request rejected", extra={"codes": ["unknown_field"]})
    logger.info("outside")
    first, second = lines(stream)
    assert first["requestId"] == "TCK-1" and first["codes"] == ["unknown_field"] and first["level"] == "WARNING"
    assert second["requestId"] is None
    assert {"time", "level", "logger", "message"} <= set(first)


def test_a_control_character_cannot_forge_a_second_line(capture):
    logger, stream = capture
    logger.info("value: %s", 'x\n{"level": "ERROR", "message": "forged"}')
    assert len(stream.getvalue().splitlines()) == 1


def test_configure_logging_installs_one_redacting_handler_and_quiets_libraries():
    root = logging.getLogger()
    level = root.level
    try:
        stream = io.StringIO()
        first = configure_logging("DEBUG", stream=stream)
        second = configure_logging("DEBUG", stream=stream)
        ours = [h for h in root.handlers if getattr(h, "_dsr", False)]
        assert ours == [second] and first not in root.handlers
        assert any(isinstance(f, RedactingFilter) for f in second.filters)
        for name in ("azure", "urllib3", "msal"):
            assert logging.getLogger(name).level == logging.WARNING
        logging.getLogger("dsr.test.configure").debug("Authorization: Bearer %s", TOKEN)
        assert TOKEN not in stream.getvalue() and "[REDACTED]" in stream.getvalue()
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_dsr", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
