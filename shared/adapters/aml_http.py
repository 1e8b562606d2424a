"""The one HTTP seam to Azure ML, on ``requests``.

A pooled Session shared by the worker threads (one keep-alive connection per thread and origin),
connect/read timeouts, bounded retries with jittered backoff on 429, 5xx and dropped connections, the URL
policy on every call (no redirects followed), and the bearer token from azure-identity (cached and
refreshed by the library, never logged). Every attempt is admitted by the limiter of the service limit it
counts against (``shared.domain.governor``): a 429 makes its own call wait the Retry-After, and pauses or
paces the other calls to that limit only when the throttling is shared.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from shared.domain.errors import (
    AzureMLError,
    BadResponseError,
    RetryableError,
    ThrottledError,
    classify_status,
    parse_retry_after,
)
from shared.domain.governor import Governor, Limiter, remaining_from_headers
from shared.domain.urls import UrlPolicy, redact_url
from shared.ports import ApiResponse, TokenSource

log = logging.getLogger("dsr.http")


def _error_code(body: Any) -> str:
    """The service's own error code (never its message, which may name people)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return str(err["code"])[:64]
        if isinstance(body.get("code"), str):
            return str(body["code"])[:64]
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
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._policy = policy
        self._timeout = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        # one limiter per service limit (ARM per subscription, each data-plane service per host)
        self._governor = governor or Governor(policy.templates, sleep=sleep)
        self._session = requests.Session()
        self._session.trust_env = False
        # pool_connections: how many origins keep a pool (the four families, times the locations of a request)
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(pool_size, 4), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self.calls = 0
        self._count_lock = threading.Lock()

    def get(self, url: str) -> ApiResponse:
        return self.request("GET", url)

    def delete(self, url: str) -> ApiResponse:
        return self.request("DELETE", url)

    def limiter(self, url: str) -> Limiter:
        """The limiter of the service limit ``url`` counts against, shared by every thread of the process."""
        return self._governor.limiter(url)

    def request(self, method: str, url: str) -> ApiResponse:
        self._policy.check(url)
        limiter = self.limiter(url)
        last: AzureMLError | None = None
        for attempt in range(1, self._max_attempts + 1):
            backoff = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            sent_at = limiter.acquire()
            try:
                response = self._once(method, url)
            except ThrottledError as exc:
                # this call waits its Retry-After (else the backoff); the limiter decides about the others
                delay = backoff if exc.retry_after is None else min(exc.retry_after, self._max_retry_after)
                pauses = limiter.pauses
                limiter.answered(sent_at, throttled=exc.status == 429, retry_after=delay)
                if limiter.pauses != pauses:
                    log.info("throttled: shared, pausing", extra={"origin": urlsplit(url).netloc, **limiter.stats()})
                last = exc
                if attempt < self._max_attempts:
                    self._sleep(delay)
            except RetryableError as exc:
                last = exc
                if attempt < self._max_attempts:
                    self._sleep(backoff)
            except AzureMLError:
                limiter.answered(sent_at)  # a 4xx answer: the call was admitted
                raise
            else:
                limiter.answered(sent_at, remaining=remaining_from_headers(response.headers))
                return response
            if attempt < self._max_attempts:
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

    def _once(self, method: str, url: str) -> ApiResponse:
        token = self._credential.get_token(self._scope).token
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "aml-dsr/1.0"}
        with self._count_lock:
            self.calls += 1
        started = time.monotonic()
        try:
            response = self._session.request(method, url, headers=headers, timeout=self._timeout, allow_redirects=False)
            content = response.content
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableError(f"connection failed ({type(exc).__name__})", code="connection_failed") from None
        except requests.RequestException as exc:
            raise RetryableError(f"request failed ({type(exc).__name__})", code="connection_failed") from None
        status = response.status_code
        body: Any = None
        if content:
            try:
                body = json.loads(content)
            except ValueError:
                if 200 <= status < 300:
                    raise RetryableError(f"HTTP {status} with a body that is not JSON", code="bad_json") from None
        log.debug(
            "call",
            extra={"method": method, "url": redact_url(url), "status": status, "ms": round((time.monotonic() - started) * 1000)},
        )
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 200 and _error_code(body) == "RequestThrottled":
            status = 429
        error = classify_status(status, retry_after=retry_after, detail=_error_code(body))
        if error is not None:
            raise error
        if status not in (200, 201, 202, 204):
            raise BadResponseError(f"unexpected HTTP {status}", status=status)
        return ApiResponse(status=status, headers={k.lower(): v for k, v in response.headers.items()}, body=body)

    def close(self) -> None:
        self._session.close()
