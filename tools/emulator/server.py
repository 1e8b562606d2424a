"""The loopback HTTP server around ``EmulatorCore`` and its Python API, ``EmulatorServer``."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tools.emulator.config import EmulatorConfig
from tools.emulator.core import EmulatorCore, Request, Response
from tools.emulator.data import (
    DEMO_RESOURCE_GROUP,
    DEMO_SUBSCRIPTION,
    DEMO_WORKSPACE,
    JSON,
    Subject,
)

_NO_BODY = {204, 304}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()
    allow_reuse_address = True
    request_queue_size = 128  # the default of 5 drops SYNs of concurrent clients (1 s retransmit)

    def __init__(self, address: tuple[str, int], core: EmulatorCore, verbose: bool) -> None:
        self.core = core
        self.verbose = verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    server_version = "aml-dsr-emulator/1"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    wbufsize = -1  # buffer the response: status, headers and body leave in one write
    disable_nagle_algorithm = True
    server: _HttpServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "bad request body")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        host, port = self.server.server_address[:2]
        headers.setdefault("host", f"{host!s}:{port}")
        try:
            response = self.server.core.handle(Request(method, self.path, headers, body))
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, not hang the client
            response = Response(500, {"error": {"code": "EmulatorError", "message": repr(exc)}})
            if self.server.verbose:
                import traceback

                traceback.print_exc()
        if response.drop:
            self.close_connection = True  # no status line, no headers: the client sees the connection close
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        payload = b""
        if response.body is not None and response.status not in _NO_BODY:
            payload = json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status not in _NO_BODY:
            if payload:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write("emulator: " + (format % args) + "\n")


class EmulatorServer:
    """The workspace emulator on a loopback port.

    >>> with EmulatorServer(EmulatorConfig(scale=1, seed=7)) as emu:   # doctest: +SKIP
    ...     env = emu.settings()
    """

    def __init__(self, config: EmulatorConfig | None = None, *, verbose: bool = False, **knobs: Any) -> None:
        base = config or EmulatorConfig()
        self.core = EmulatorCore(base.merged(knobs) if knobs else base)
        self._verbose = verbose
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> _HttpServer:
        if self._httpd is None:
            config = self.core.config
            self._httpd = _HttpServer((config.host, config.port), self.core, self._verbose)
        return self._httpd

    def start(self) -> Self:
        """Serve on a background (daemon) thread; returns self."""
        httpd = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="aml-dsr-emulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until ``stop()`` is called from another thread."""
        self._bind().serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and settings

    @property
    def config(self) -> EmulatorConfig:
        return self.core.config

    @property
    def port(self) -> int:
        return int(self._bind().server_address[1])

    @property
    def host(self) -> str:
        return str(self._bind().server_address[0])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def identity_header(self) -> str:
        return self.core.identity_header

    def settings(self) -> dict[str, str]:
        """App settings that point aml-dsr at this emulator (``{location}`` is left for the app to fill)."""
        base = self.base_url
        return {
            "DSR_ARM_ENDPOINT": f"{base}/arm",
            "DSR_MODELMANAGEMENT_ENDPOINT": f"{base}/mms/{{location}}",
            "DSR_EXPERIMENTS_ENDPOINT": f"{base}/exp/{{location}}",
            "DSR_AETHER_ENDPOINT": f"{base}/aether/{{location}}",
            "IDENTITY_ENDPOINT": f"{base}/msi/token",
            "IDENTITY_HEADER": self.core.identity_header,
        }

    # ------------------------------------------------------------------ state and truth

    def requests(self) -> list[JSON]:
        """The request log: seq, time, method, path, query, family, status, dropped, authorized, fault."""
        return self.core.requests()

    def clear_requests(self) -> None:
        self.core.clear_requests()

    def expected_ids(
        self,
        sub: str = DEMO_SUBSCRIPTION,
        rg: str = DEMO_RESOURCE_GROUP,
        ws: str = DEMO_WORKSPACE,
        subject: Subject | None = None,
    ) -> dict[str, set[str]]:
        """Ids per kind of the current data (all kinds present, empty sets once the workspace is gone).

        With ``subject``: only records whose served JSON names the subject's objectId, UPN or one of
        ``subject.emails`` as a whole token, any letter case.
        """
        return self.core.expected_ids(sub, rg, ws, subject)

    def expected_deletables(
        self,
        sub: str = DEMO_SUBSCRIPTION,
        rg: str = DEMO_RESOURCE_GROUP,
        ws: str = DEMO_WORKSPACE,
        subject: Subject | None = None,
    ) -> dict[str, set[str]]:
        """ARM ids per v2 delete kind of contract 6.1 (and the ``*Containers`` that go with all their versions).

        Workspace scope: everything of those kinds (compute instances, never clusters). With ``subject``: what
        they created (``systemData.createdBy`` = UPN or one of ``subject.emails``, any case) and the compute
        instances assigned to them.
        """
        return self.core.expected_deletables(sub, rg, ws, subject)

    def resource_deletions(self) -> list[JSON]:
        """v2 and compute deletes accepted: kind, id, mode (sync/lro), operationId, status, and for computes
        computeType and underlyingResourceAction. A compute cluster here means the app deleted one."""
        return self.core.deletions_of_resources()

    def configure(self, **knobs: Any) -> EmulatorConfig:
        """Merge knobs at run time (see ``EmulatorConfig``); returns the new config."""
        return self.core.configure(**knobs)

    def reset(self) -> None:
        """Data, pending operations, drop_delete_response, fault draws and the log back to the start.

        Knobs and issued tokens are kept.
        """
        self.core.reset()

    def workspace_deletions(self) -> list[JSON]:
        """ARM workspace deletes accepted: subscription, resourceGroup, workspace, forceToPurge, operationId, status."""
        return self.core.workspace_deletions()

    def issue_token(self, client_id: str | None = None) -> str:
        """A valid bearer token without the managed-identity round trip (for tests of other parts)."""
        return self.core.issue_token(client_id)

    def issued_tokens(self) -> set[str]:
        """Every access token issued so far (to check that none leaked into a bundle, log or event)."""
        return self.core.issued_tokens()

    def secret_values(self) -> set[str]:
        """Every credential the emulator can serve (v1 datastores, v2 datastore/connection credentials, the
        answers of listKeys/listSecrets/token/listNodes): none may appear in an export bundle."""
        return self.core.secret_values()
