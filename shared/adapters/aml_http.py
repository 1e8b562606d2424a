"""The one HTTP seam to Azure ML, on ``urllib3`` (what ``requests`` runs on, without its per-call work).

A connection pool shared by the worker threads (one keep-alive connection per thread and origin),
connect/read timeouts, bounded retries with jittered backoff on 429, 5xx and dropped connections, the URL
policy on every call (no redirects followed), and the bearer token from azure-identity (cached and
refreshed by the library, never logged). Every attempt is admitted by the limiter of the service limit it
counts against (``shared.domain.governor``): a 429 makes its own call wait the Retry-After (``wait_aside``: a
scheduler lends the call's slot meanwhile), and paces the other calls to that limit only when the throttling
is shared.

``urllib3`` directly, not a ``requests`` Session: requests spent ~0.5 ms of CPU a call preparing the call and
merging settings this seam never uses (cookies, proxies, .netrc, auth, hooks), more than the rest of the call.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import make_headers

import shared.telemetry as telemetry
from shared.domain.documents import MAX_RESPONSE_DEPTH, parse_json_document
from shared.domain.errors import (
    AzureMLError,
    BadResponseError,
    RetryableError,
    ThrottledError,
    UnreadableResponseError,
    capped_wait,
    classify_status,
    parse_retry_after,
    safe_service_code,
)
from shared.domain.governor import Governor, Limiter
from shared.domain.urls import UrlPolicy, check_post, redact_url
from shared.ports import ApiResponse, TokenSource, wait_aside

log = logging.getLogger("dsr.http")


READ_CHUNK_BYTES = 64 * 1024
# what ``requests`` sent on every call (its default headers), kept so the services answer as before
_COMMON_HEADERS = {
    "Accept": "application/json",
    "User-Agent": "aml-dsr/1.0",
    "Accept-Encoding": ", ".join(make_headers(accept_encoding=True)["accept-encoding"].split(",")),
    "Connection": "keep-alive",
}


class _Dropped(Exception):
    """The connection failed or broke while a response was read."""


def _error_code(body: Any) -> str:
    """The service's own error code when it looks like one (never its message, which may name people)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return safe_service_code(err["code"])
        if isinstance(body.get("code"), str):
            return safe_service_code(body["code"])
    return ""


class AzureMLHttp:
    """Implements ``shared.ports.AzureML``."""

    def __init__(
        self,
        credential: TokenSource,
        *,
        scope: str,
        policy: UrlPolicy,
        pool_size: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 8,
        max_retry_after: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Any = time.sleep,
        governor: Governor | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
        response_deadline: float = 300.0,
        max_depth: int = MAX_RESPONSE_DEPTH,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._policy = policy
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._max_attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._max_response_bytes = max_response_bytes
        self._response_deadline = response_deadline
        self._max_depth = max_depth
        # one limiter per service limit (ARM per subscription, each data-plane service per host)
        self._governor = governor or Governor(policy.templates, sleep=sleep)
        # num_pools: how many origins keep a pool (the four families, times the locations of a request);
        # no proxy or .netrc from the environment; no redirect followed, no retry below the seam's own
        self._pool = urllib3.PoolManager(num_pools=16, maxsize=max(pool_size, 4), retries=False)
        self.calls = 0
        self._count_lock = threading.Lock()

    def get(self, url: str) -> ApiResponse:
        return self.request("GET", url)

    def delete(self, url: str) -> ApiResponse:
        return self.request("DELETE", url)

    def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
        check_post(self._policy, url)
        return self.request("POST", url, body=body)

    def limiter(self, url: str) -> Limiter:
        """The limiter of the service limit ``url`` counts against, shared by every thread of the process."""
        return self._governor.limiter(url)

    def request(self, method: str, url: str, *, body: dict[str, Any] | None = None) -> ApiResponse:
        """One call, retried as needed, as one ``"{METHOD} {family}"`` span (no URL in it)."""
        with telemetry.outbound_call(method, self._policy.family(url), urlsplit(url).hostname):
            response = self._attempts(method, url, body)
            telemetry.answered(response.status)
            return response

    def _attempts(self, method: str, url: str, body: dict[str, Any] | None) -> ApiResponse:
        self._policy.check(url)
        last: AzureMLError | None = None
        for attempt in range(1, self._max_attempts + 1):
            backoff = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            limiter = self.limiter(url)  # per attempt: an answer may have put its family under its subscription's
            sent_at = limiter.acquire()
            try:
                response = self._once(method, url, body)
            except ThrottledError as exc:
                # this call waits its Retry-After (else the backoff); the limiter decides about the others
                telemetry.throttled(exc.status)
                delay = capped_wait(exc.retry_after, self._max_retry_after, default=backoff)
                limiter, paced = self._governor.answered(url, sent_at, headers=exc.headers, throttled=exc.status == 429)
                if paced:
                    log.info("throttled: shared, pacing", extra={"origin": urlsplit(url).netloc, **limiter.stats()})
                last = exc
                if attempt < self._max_attempts:
                    wait_aside(delay, self._sleep)
            except RetryableError as exc:
                last = exc
                if attempt < self._max_attempts:
                    wait_aside(backoff, self._sleep)
            except AzureMLError as exc:
                self._governor.answered(url, sent_at, headers=exc.headers)  # a 4xx answer: the call was admitted
                raise
            else:
                self._governor.answered(url, sent_at, headers=response.headers)
                return response
            if attempt < self._max_attempts:
                telemetry.retried(last.code)
                log.debug(
                    "retrying",
                    extra={
                        "method": method,
                        "url": redact_url(url),
                        "attempt": attempt,
                        "error": last.code,
                        "status": last.status,
                    },
                )
        assert last is not None
        last.message = f"{last.message} (gave up after {self._max_attempts} attempts)"
        raise last

    def _once(self, method: str, url: str, payload: dict[str, Any] | None = None) -> ApiResponse:
        token = self._credential.get_token(self._scope).token
        headers = {**_COMMON_HEADERS, "Authorization": f"Bearer {token}"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        with self._count_lock:
            self.calls += 1
        started = time.monotonic()
        try:
            response = self._pool.urlopen(
                method,
                url,
                headers=headers,
                body=data,
                timeout=self._timeout,
                redirect=False,
                retries=False,
                preload_content=False,
            )
            content = self._read_body(response)
        except (Urllib3Error, _Dropped, OSError) as exc:
            raise RetryableError(f"connection failed ({_cause(exc)})", code="connection_failed") from None
        status = response.status
        body = self._parse_body(status, content)
        if log.isEnabledFor(logging.DEBUG):  # redact_url is not free: only when the line is written
            ms = round((time.monotonic() - started) * 1000)
            log.debug("call", extra={"method": method, "url": redact_url(url), "status": status, "ms": ms})
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 200 and _error_code(body) == "RequestThrottled":
            status = 429
        error = classify_status(status, retry_after=retry_after, detail=_error_code(body))
        if error is not None:
            error.headers = response.headers
            raise error
        if status not in (200, 201, 202, 204):
            raise BadResponseError(f"unexpected HTTP {status}", status=status)
        return ApiResponse(status=status, headers={k.lower(): v for k, v in response.headers.itermerged()}, body=body)

    def _read_body(self, response: urllib3.BaseHTTPResponse) -> bytes:
        """The whole body, read in chunks: at most ``max_response_bytes`` (``response_too_large``) and within
        ``response_deadline`` seconds overall (``response_too_slow``) on top of the per-read timeout. A body
        we stop reading closes its connection: a hostile server cannot keep a worker or its memory."""
        limit = self._max_response_bytes
        done = False
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.strip().isdigit() and int(declared) > limit:
                raise self._too_large(response)
            deadline = time.monotonic() + self._response_deadline
            content = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise UnreadableResponseError(
                        f"the response did not arrive within {self._response_deadline:g} seconds; stopped reading",
                        code="response_too_slow",
                        status=response.status,
                    )
                # read1: returns as soon as some bytes are in (each wait bounded by the read timeout), so the
                # deadline is checked between trickled bytes; decoded bytes are what count against the limit
                chunk = response.read1(READ_CHUNK_BYTES, decode_content=True)
                if not chunk:
                    break
                content += chunk
                if len(content) > limit:
                    raise self._too_large(response)
            done = True
            return bytes(content)
        except UnreadableResponseError:
            raise
        except Exception as exc:  # noqa: BLE001 - urllib3's own errors while streaming: a dropped connection
            raise _Dropped(_cause(exc)) from None
        finally:
            if done:
                response.release_conn()
            else:
                response.close()  # drop the connection: its unread rest must not reach the next call
                response.release_conn()

    def _too_large(self, response: urllib3.BaseHTTPResponse) -> UnreadableResponseError:
        return UnreadableResponseError(
            f"the response is larger than {self._max_response_bytes} bytes; stopped reading",
            code="response_too_large",
            status=response.status,
        )

    def _parse_body(self, status: int, content: bytes) -> Any:
        """JSON or ``None``; a 2xx that is not JSON is retried (``bad_json``), one nested too deep is not."""
        if not content:
            return None
        try:
            return parse_json_document(content, max_depth=self._max_depth)
        except UnreadableResponseError as exc:
            exc.status = status
            raise
        except ValueError:
            if 200 <= status < 300:
                raise RetryableError(f"HTTP {status} with a body that is not JSON", code="bad_json") from None
            return None

    def close(self) -> None:
        self._pool.clear()


def _cause(exc: BaseException) -> str:
    """The name of what broke (``ReadTimeoutError``, ``ProtocolError``, ...): never its text, which holds the URL."""
    return str(exc) if isinstance(exc, _Dropped) else type(exc).__name__
