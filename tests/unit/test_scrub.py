"""Secret scrubbing by name and by value (shared/domain/scrub.py), and the other "our words" rules of issue #17."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.domain.errors import ConfigurationError, capped_wait, parse_retry_after
from shared.domain.outcome import MAX_OUTCOME_BYTES, cap_outcome, event_size, outcome_event
from shared.domain.scrub import REDACTED, is_secret_name, name_words, scrub_record
from shared.settings import load_settings

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- names ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "account_key",
        "storageAccountKey",
        "sas_token",
        "connection_string",
        "sharedAccessSignature",
        "adminPassword",
        "authToken",
        "clientSecretValue",
        "key",
        "Account-Key",
        "ACCOUNT_KEY",
        "accountkey",
        "connectionstring",
        "sastoken",
        "primaryKey",
        "secondary_key",
        "privateKey",
        "api-key",
        "x-api-key",
        "keys",
        "key1",
        "password2",
        "sasUrl",
        "credentials",
        "refresh_token",
        "passphrase",
        "db_pwd",
    ],
)
def test_names_that_hold_credentials_are_secret(name):
    assert is_secret_name(name), name_words(name)


@pytest.mark.parametrize(
    "name",
    [
        "keyVault",  # a resource id of the vault: needed to read an export, holds no secret
        "keyVaultArmId",
        "keyVaultProperties",
        "keyIdentifier",
        "secretName",
        "tokenType",
        "tokenExpiryTimeUtc",
        "credentialType",
        "passwordEnabled",
        "publicKey",
        "sshPublicKey",
        "partitionKey",
        "rowKey",
        "monkey",
        "description",
        "isSas",
        "name",
        "subscriptionId",
    ],
)
def test_names_that_describe_or_are_not_credentials_are_kept(name):
    assert not is_secret_name(name), name_words(name)


WORDS = st.sampled_from(["storage", "account", "admin", "client", "auth", "shared", "access", "db", "my", "primary", "x"])
SECRET_LAST = st.sampled_from(["key", "password", "secret", "token", "sas", "credential", "credentials", "passwd", "pwd"])
DESCRIPTIVE_LAST = st.sampled_from(["id", "name", "uri", "url", "vault", "version", "type", "expiry", "enabled"])


def spell(words: list[str], style: str) -> str:
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(words)
    if style == "upper":
        return "_".join(w.upper() for w in words)
    return ".".join(words)


STYLES = st.sampled_from(["camel", "pascal", "snake", "kebab", "upper", "dotted"])


@PROPERTY
@given(prefix=st.lists(WORDS, max_size=3), last=SECRET_LAST, style=STYLES, value=st.text(min_size=1, max_size=40))
def test_property_a_secret_name_in_any_spelling_is_redacted(prefix, last, style, value):
    # GIVEN a field named like a credential in any spelling, with any non-empty text
    name = spell([*prefix, last], style)
    record = {"properties": {name: value, "other": "kept"}}
    # WHEN scrubbed THEN the value is the marker, counted, and the rest is kept
    out, counts = scrub_record(record)
    assert out["properties"][name] == REDACTED or value == REDACTED, name
    assert counts.secrets >= (0 if value == REDACTED else 1)
    assert out["properties"]["other"] == "kept"


@PROPERTY
@given(first=SECRET_LAST, last=DESCRIPTIVE_LAST, style=STYLES)
def test_property_a_name_describing_a_secret_is_kept(first, last, style):
    assume(not (first == "sas" and last in ("url", "uri")))  # a SAS URL is the secret itself
    name = spell([first, last], style)
    out, counts = scrub_record({name: "https://vault.example/keys/k1"})
    assert out == {name: "https://vault.example/keys/k1"} and counts.secrets == 0, name


# -- values -----------------------------------------------------------------------------------------------------------

SECRET = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", min_size=24, max_size=64).map(
    lambda s: "S3CR" + s
)
CARRIERS = [
    "https://sa.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig={s}&se=2030",
    "https://sa.blob.core.windows.net/c?sig={s}",
    "DefaultEndpointsProtocol=https;AccountName=sa;AccountKey={s};EndpointSuffix=core.windows.net",
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey={s}",
    "Server=db;User Id=u;Password={s};",
    "Authorization: Bearer {s}",
    "curl -H 'authorization: bearer {s}' https://x",
    "-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----",
    "see -----BEGIN RSA PRIVATE KEY-----\n{s}\n{s}\n-----END RSA PRIVATE KEY----- there",
]


@PROPERTY
@given(secret=SECRET, carrier=st.sampled_from(CARRIERS), field=st.sampled_from(["description", "tags", "note", "x"]))
def test_property_a_secret_looking_value_is_redacted_under_any_field(secret, carrier, field):
    # GIVEN a secret inside a SAS URL, a connection string, a bearer header or a PEM block, in a harmless field
    record = {"properties": {field: carrier.format(s=secret)}, "list": [carrier.format(s=secret)]}
    # WHEN scrubbed THEN the secret is nowhere in the output, and each replacement is counted
    out, counts = scrub_record(record)
    assert secret not in json.dumps(out)
    assert counts.secrets >= 2
    # and scrubbing again finds nothing new (the marker is not a secret)
    assert scrub_record(out)[1].secrets == 0


def test_values_keep_their_harmless_parts():
    out, _ = scrub_record({"u": "https://sa.blob.core.windows.net/c/b?sv=2022&sig=abc123&se=2030"})
    assert out["u"] == f"https://sa.blob.core.windows.net/c/b?sv=2022&sig={REDACTED}&se=2030"
    prose = {"d": "Bearer tokens expire; basic configuration; a=b"}
    assert scrub_record(prose) == (prose, scrub_record(prose)[1]) and scrub_record(prose)[1].secrets == 0


def test_booleans_numbers_and_empty_values_under_secret_names_are_kept():
    record = {"passwordEnabled": True, "key": 3, "token": None, "secret": "", "sasToken": [], "password": True}
    out, counts = scrub_record(record)
    assert out == record and counts.secrets == 0


def test_the_catalog_list_still_applies():
    out, counts = scrub_record({"weirdName": "v"}, frozenset({"weirdname"}))
    assert out == {"weirdName": REDACTED} and counts.secrets == 1


def test_nan_and_infinity_become_null_and_are_counted():
    out, counts = scrub_record({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": 2}})
    assert out == {"a": None, "b": [None, None, 1.5], "c": {"d": 2}}
    assert counts.non_finite == 3
    json.dumps(out, allow_nan=False)


# -- waits ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["nan", "inf", "-inf", "Infinity", "NaN"])
def test_a_non_finite_retry_after_is_ignored(header):
    assert parse_retry_after(header) is None


def test_every_wait_is_capped():
    assert capped_wait(999999.0, 120.0, default=1.0) == 120.0
    assert capped_wait(None, 120.0, default=1.0) == 1.0
    assert capped_wait(5.0, 120.0, default=1.0) == 5.0


# -- outcomes ---------------------------------------------------------------------------------------------------------


def test_a_long_outcome_is_cut_to_fit_one_message_and_names_the_full_list():
    # GIVEN a dry run of 2,100 items and as many errors
    items = [
        {"kind": "models", "id": f"model-{i:05d}-" + "x" * 60, "target": "/subscriptions/s/ws", "result": "planned"}
        for i in range(2100)
    ]
    errors = [{"code": "still_present", "message": "m" * 80, "kind": "models", "target": "t", "id": str(i)} for i in range(2100)]
    audit = {"container": "dsr-audit", "blob": "R-1.jsonl"}
    event = outcome_event("R-1", "delete", "partially_completed", {"plan": items, "errors": errors, "audit": audit, "counts": {}})
    assert event_size(event) > MAX_OUTCOME_BYTES
    # WHEN capped THEN it fits, says what was cut, out of how many, and where the full list is
    capped, cut = cap_outcome(event)
    assert cut and event_size(capped) <= MAX_OUTCOME_BYTES
    truncated = capped["data"]["truncated"]
    assert truncated["plan"]["total"] == 2100 and truncated["plan"]["listed"] == len(capped["data"]["plan"]) < 2100
    assert truncated["plan"]["fullListIn"] == audit and capped["data"]["itemsTruncated"] is True
    assert event["data"]["plan"] == items  # the original is untouched


def test_a_short_outcome_is_not_touched():
    event = outcome_event("R-1", "export", "completed", {"errors": [], "counts": {}})
    assert cap_outcome(event) == (event, False)


# -- settings ---------------------------------------------------------------------------------------------------------

SAS = "sv=2022-11-02&ss=b&sig=VERYSECRETSIGNATURE0123456789abcdef%3D"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DSR_STORAGE__blobServiceUri", f"https://sa.blob.core.windows.net/?{SAS}"),
        ("DSR_ARM_ENDPOINT", f"https://user:VERYSECRETSIGNATURE0123456789abcdef@management.azure.com/?{SAS}"),
        ("DSR_EVENTGRID_TOPIC_ENDPOINT", f"http://topic.example/api?{SAS}"),
        ("DSR_CONCURRENCY", "AccountKey=VERYSECRETSIGNATURE0123456789abcdef"),
        ("DSR_LOG_LEVEL", "Password=VERYSECRETSIGNATURE0123456789abcdef"),
    ],
)
def test_a_configuration_error_never_prints_a_secret(name, value, tmp_path):
    # GIVEN a setting that holds a SAS, a password or a key (pasted into the wrong place)
    # WHEN the app starts THEN the error names the setting and shows no secret
    with pytest.raises(ConfigurationError) as info:
        load_settings({name: value}, tmp_path)
    assert name in str(info.value)
    assert "VERYSECRETSIGNATURE" not in str(info.value), str(info.value)
    assert not re.search(r"sig=[^&\s']", str(info.value))
