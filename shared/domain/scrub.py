"""Secret scrubbing of exported records, by name and by value. Pure; no I/O.

Three lines of defence, each counted in the manifest's ``secretsRedacted``:

1. **The catalog's list** (``secretFields``): exact field names known to hold credentials.
2. **Names by pattern**: a field whose name, in any spelling (``accountKey``, ``account_key``,
   ``Account-Key``, ``storageAccountKey``, ``sasToken``, ``connection_string``, ``adminPassword``,
   ``clientSecretValue``, ``authToken``, ``sharedAccessSignature``, a bare ``key``), names a password,
   secret, token, key, SAS, signature, credential or connection string. Its value is replaced by the marker
   when it is a non-empty string, object or array (a boolean or a number holds no secret: ``passwordEnabled``).
   Names that only *describe* a secret are kept, because they are needed to understand an export and hold
   no secret: a last word of ``id``, ``name``, ``uri``, ``url``, ``vault``, ``version``, ``type``, ``expiry``...
   (``keyVault``, ``keyVaultArmId``, ``keyIdentifier``, ``secretName``, ``tokenType``), and keys that are
   not credentials (``publicKey``, ``partitionKey``, ``rowKey``, ``sortKey``), and switches (``isSas``,
   ``hasPassword``). A SAS URL or URI (``sasUrl``) is the secret itself and is always replaced.
3. **Values by pattern**, in every string whatever its field: a URL's ``sig=`` (a SAS), ``AccountKey=``,
   ``SharedAccessKey=``, ``SharedAccessSignature=``, ``Password=`` in a connection string, ``Bearer``
   tokens, JWTs, PEM blocks. Only the secret part is replaced, so the rest stays readable.

``NaN`` and ``Infinity`` (which Python's json reads, and strict parsers reject) become ``null``, counted apart.
The scrub walks at most ``MAX_RESPONSE_DEPTH`` levels: deeper documents are refused at the HTTP seam.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

REDACTED = "[REDACTED]"

# words that, as the last word of a name, make it a credential-bearing field
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "sas",
        "sig",
        "signature",
        "credential",
        "credentials",
        "creds",
        "key",
        "keys",
        "apikey",
        "accountkey",
        "accesskey",
        "privatekey",
        "connectionstring",
        "connectionstrings",
        "sastoken",
        "sasurl",
        "sasuri",
        "authtoken",
        "accesstoken",
        "refreshtoken",
    }
)
# words that make a name secret wherever they stand (``passwordValue``, ``sasUrl``, ``clientSecretValue``)
_SECRET_ANYWHERE = frozenset(
    {"password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets", "sas", "credential", "credentials"}
)
# compounds found inside names written in one word (``accountkey``, ``connectionstring``, ``sastoken``)
_SECRET_STEMS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "connectionstring",
    "sharedaccess",
    "accountkey",
    "accesskey",
    "apikey",
    "privatekey",
    "masterkey",
    "primarykey",
    "secondarykey",
    "sastoken",
    "sasurl",
    "sasuri",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "bearertoken",
    "idtoken",
)
# a last word that makes the name describe a secret rather than hold one
_DESCRIPTIVE_LAST = frozenset(
    {
        "id",
        "ids",
        "arm",
        "identifier",
        "name",
        "names",
        "uri",
        "url",
        "vault",
        "version",
        "type",
        "types",
        "kind",
        "source",
        "expiry",
        "expiration",
        "expires",
        "expireson",
        "created",
        "updated",
        "time",
        "utc",
        "date",
        "count",
        "length",
        "size",
        "format",
        "algorithm",
        "policy",
        "rotation",
        "enabled",
        "required",
        "set",
        "exists",
        "present",
        "status",
        "state",
        "mode",
        "reference",
        "ref",
        "path",
        "location",
        "store",
        "provider",
    }
)
_FLAG_FIRST = frozenset({"is", "has", "use", "uses", "enable", "allow", "require", "requires", "disable"})
# ``xKey`` names that are not credentials
_HARMLESS_KEY_PREFIX = frozenset({"public", "partition", "row", "sort", "foreign", "unique", "idempotency"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def name_words(name: str) -> list[str]:
    """``storageAccountKey`` / ``storage_account_key`` / ``Storage-Account-KEY`` -> ``[storage, account, key]``."""
    words: list[str] = []
    for part in _WORD_SPLIT.split(name):
        words.extend(w.lower() for w in _CAMEL.findall(part))
    while len(words) > 1 and words[-1].isdigit():  # key1, key2
        words.pop()
    return words


@functools.lru_cache(maxsize=4096)  # the same few hundred field names recur in every record of a kind
def is_secret_name(name: str) -> bool:
    """Whether a field of this name holds a credential (see the module's docstring for the rules)."""
    words = name_words(name)
    if not words:
        return False
    last = words[-1]
    if words[0] in _FLAG_FIRST and len(words) > 1:  # isSas, hasPassword, useKey: a switch, not a secret
        return False
    if "sas" in words and last in ("url", "uri", "urls", "uris"):  # a SAS URL is the secret itself
        return True
    if last in _DESCRIPTIVE_LAST:
        return False
    if any(w in _SECRET_ANYWHERE for w in words):
        return True
    if last in ("key", "keys"):
        return not (len(words) > 1 and words[-2] in _HARMLESS_KEY_PREFIX)
    if last in _SECRET_WORDS or (len(words) > 1 and words[-2] in ("token", "key", "sas") and last in ("value", "data")):
        return True
    joined = "".join(words)
    return any(stem in joined for stem in _SECRET_STEMS)


_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM blocks (private keys, certificates): the whole block
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]{1,64}-----.*?(?:-----END [A-Z0-9 ]{1,64}-----|\Z)", re.DOTALL),
        REDACTED,
    ),
    # connection-string secrets: AccountKey=...; SharedAccessKey=...; Password=...
    (
        re.compile(
            r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd|ClientSecret|AccessKey|ApiKey)"
            r"(\s*=\s*)(?!\[REDACTED\])[^;\s\"'&]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # a SAS in a URL (sig=), and other signature-like query parameters
    (
        re.compile(
            r"(?i)((?:^|[?&;])(?:sig|signature|code|access_token|id_token|refresh_token|client_secret|key)=)(?!\[REDACTED\])[^&#\s\"']+"
        ),
        rf"\1{REDACTED}",
    ),
    # a bearer token in a header-like text (real ones are long; "Bearer tokens" in prose is left alone)
    (re.compile(r"(?i)\b(Bearer)(\s+)[A-Za-z0-9\-._~+/]{20,}=*"), rf"\1\2{REDACTED}"),
    # a JWT anywhere
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)
_VALUE_HINT = re.compile(r"(?i)-----BEGIN|=|bearer|eyJ")


def scrub_text(text: str) -> tuple[str, int]:
    """``text`` with secret-looking parts replaced by the marker; and how many parts were."""
    if not _VALUE_HINT.search(text):
        return text, 0
    count = 0
    for pattern, replacement in _VALUE_PATTERNS:
        text, n = pattern.subn(replacement, text)
        count += n
    return text, count


@dataclass
class ScrubCounts:
    secrets: int = 0
    non_finite: int = 0


def _redactable(value: Any) -> bool:
    """A value worth hiding under a secret name: a non-empty string, object or array (not the marker itself)."""
    if isinstance(value, str):
        return bool(value) and value != REDACTED
    return isinstance(value, (dict, list)) and bool(value)


def scrub_record(value: Any, secret_names: frozenset[str] = frozenset()) -> tuple[Any, ScrubCounts]:
    """A copy of ``value`` with credential fields and secret-looking values replaced, and non-finite
    numbers nulled; with the counts. ``secret_names`` is the catalog's list (lowercase)."""
    counts = ScrubCounts()

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            out: dict[Any, Any] = {}
            for key, child in item.items():
                if isinstance(key, str) and _redactable(child) and (key.lower() in secret_names or is_secret_name(key)):
                    out[key] = REDACTED
                    counts.secrets += 1
                else:
                    out[key] = walk(child)
            return out
        if isinstance(item, list):
            return [walk(child) for child in item]
        if isinstance(item, str):
            text, n = scrub_text(item)
            counts.secrets += n
            return text
        if isinstance(item, float) and not math.isfinite(item):
            counts.non_finite += 1
            return None
        return item

    return walk(value), counts


def scrub_secrets(value: Any, secret_names: frozenset[str] = frozenset()) -> tuple[Any, int]:
    """``scrub_record`` counting secrets only (non-finite numbers are nulled all the same)."""
    out, counts = scrub_record(value, secret_names)
    return out, counts.secrets
