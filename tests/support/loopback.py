"""Tiny stdlib HTTP servers on loopback for the outbound-boundary tests: an "attacker" that records whatever
reaches it, a scripted "Azure ML endpoint", and a tampering reverse proxy in front of the workspace emulator."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-serialisable, or bytes as is
    chunks: Iterable[bytes] | None = None  # streamed with chunked encoding instead of body (endless, trickling)


Route = Callable[[Seen, "LoopbackServer"], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        owner = self.server.owner
        with owner.lock:
            owner.seen.append(seen)
        reply = owner.route(seen, owner)
        if reply.chunks is not None:
            self._stream(reply)
            return
        payload = (
            reply.body if isinstance(reply.body, bytes) else (b"" if reply.body is None else json.dumps(reply.body).encode())
        )
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if payload and not any(k.lower() == "content-type" for k in reply.headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, reply: Reply) -> None:
        """Chunked transfer until the iterator ends or the client hangs up (how a hostile server is stopped)."""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in reply.chunks or ():
                if chunk:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    do_GET = do_DELETE = do_POST = do_PUT = do_PATCH = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LoopbackServer


class LoopbackServer:
    """``with LoopbackServer(route) as server:`` serves on 127.0.0.1:<free port>; ``server.seen`` lists requests."""

    def __init__(self, route: Route | None = None) -> None:
        self.route: Route = route or (lambda seen, server: Reply(200, {}, {"stolen": True}))
        self.seen: list[Seen] = []
        # for routes that forward (a proxy): answer instead of the upstream, or rewrite its reply
        self.intercept: Callable[[Seen], Reply | None] | None = None
        self.tamper: Callable[[Seen, Reply], Reply] | None = None
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def forward(upstream: str, seen: Seen, host: str) -> Reply:
    """Forward a request to ``upstream`` (host:port) as a reverse proxy would, Host header included."""
    conn = http.client.HTTPConnection(upstream, timeout=30)
    try:
        headers = {k: v for k, v in seen.headers.items() if k not in ("host", "connection", "content-length")}
        headers["Host"] = host
        conn.request(seen.method, seen.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        drop = {"content-length", "connection", "transfer-encoding", "date", "server", "keep-alive"}
        return Reply(response.status, {k: v for k, v in response.getheaders() if k.lower() not in drop}, body)
    finally:
        conn.close()


class FakeCredential:
    """A token source (``shared.ports.TokenSource``) that counts how often it is asked."""

    def __init__(self, token: str = "TOKEN-0123456789abcdef") -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str) -> Any:
        self.calls += 1

        @dataclass
        class AccessToken:
            token: str
            expires_on: int

        return AccessToken(self.token, 2_000_000_000)
