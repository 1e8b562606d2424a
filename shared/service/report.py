"""The readable export (docs/contract.md §6.4): ``{requestId}/index.html`` and ``{requestId}/{requestId}.zip``.

The page is rendered by Jinja2 with autoescaping on (every value from a record is escaped), from a template
file (``shared/templates/export.html.j2``); it holds no script and no external asset (inline CSS only, and a
Content-Security-Policy that forbids both). Records are streamed from the ``.jsonl`` files and the page is
streamed into staged blocks; the zip is written the same way (``zipfile`` over a write-only stream that stages
blocks, zip64 where a file needs it), so neither the bundle nor the zip is ever held in memory. What the page
read whole (and the page itself), up to ``READ_ONCE_BYTES`` in all, is kept for the zip instead of being
downloaded a second time.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shared.ports import BlockBlob, BundleStore
from shared.service.bundle import BLOCK_BYTES, block_id, commit_blocks
from shared.settings import Settings

log = logging.getLogger("dsr.report")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
RECORDS_PER_FILE_ON_PAGE = 2000  # the rest are counted on the page and are all in the file
LONGEST_VALUE = 300
READ_ONCE_BYTES = 16 * 1024 * 1024  # what the page read whole, kept for the zip (a bound, whatever the export)
NAME_FIELDS = ("displayName", "name", "experimentName", "runId", "title")
DATE_FIELDS = (
    "createdAt",
    "createdTime",
    "createdOn",
    "creationTime",
    "createdDate",
    "lastModifiedAt",
    "lastModifiedTime",
    "lastModifiedDate",
    "modifiedTime",
    "updatedTime",
    "startTimeUtc",
    "endTimeUtc",
)
IDENTITY_FIELDS = frozenset(
    f.lower()
    for f in (
        "createdBy",
        "lastModifiedBy",
        "userObjectId",
        "userId",
        "userName",
        "userPuId",
        "upn",
        "userPrincipalName",
        "email",
        "emails",
        "emailAddress",
        "emailAddresses",
        "assignedUser",
        "objectId",
        "owner",
        "submittedBy",
        "principalId",
    )
)
READABLE_STATUSES = ("completed", "partially_completed")

_environment = Environment(
    loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
)


def report_name(request_id: str) -> str:
    return f"{request_id}/index.html"


def zip_name(request_id: str) -> str:
    return f"{request_id}/{request_id}.zip"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= LONGEST_VALUE else text[:LONGEST_VALUE] + "…"


def _scopes(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    return [d for d in (data, data.get("properties"), data.get("systemData")) if isinstance(d, dict)]


def _identity_fields(value: Any, path: str, out: list[tuple[str, str]], depth: int = 0) -> None:
    if len(out) >= 12 or depth > 8:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            if str(key).lower() in IDENTITY_FIELDS and child not in (None, "", [], {}):
                if isinstance(child, dict):
                    for leaf_key, leaf in child.items():
                        if leaf not in (None, "", [], {}) and len(out) < 12:
                            out.append((f"{key_path}.{leaf_key}", _short(leaf)))
                else:
                    out.append((key_path, _short(child)))
            else:
                _identity_fields(child, key_path, out, depth + 1)
    elif isinstance(value, list):
        for i, child in enumerate(value[:50]):
            _identity_fields(child, f"{path}[{i}]", out, depth + 1)


def summarise(line: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one bundle line: its id, a name, its dates, and the fields that identify a person."""
    data = line.get("data")
    scopes = _scopes(data)
    name = next((s[f] for f in NAME_FIELDS for s in scopes if isinstance(s.get(f), str) and s[f]), None)
    dates = [(f, _short(s[f])) for s in scopes for f in DATE_FIELDS if isinstance(s.get(f), (str, int, float)) and s[f] != ""][:6]
    identity: list[tuple[str, str]] = []
    _identity_fields(data, "", identity)
    return {
        "id": _short(line.get("id", "")),
        "name": _short(name) if name is not None else "",
        "dates": dates,
        "identity": identity,
        "matchedBy": line.get("matchedBy"),
    }


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


class _Chunks(Protocol):
    def chunks(self, name: str) -> Iterator[bytes]: ...


class _ReadOnce:
    """The bundle as the page and then the zip read it: a file the page read to its end is kept (up to
    ``budget`` bytes in all) and handed to the zip from memory, once, instead of a second download."""

    def __init__(self, store: BundleStore, budget: int) -> None:
        self._store = store
        self._left = budget
        self._kept: dict[str, list[bytes]] = {}

    def keep(self, name: str, chunks: list[bytes]) -> None:
        size = sum(len(c) for c in chunks)
        if size <= self._left:
            self._kept[name] = chunks
            self._left -= size

    def chunks(self, name: str) -> Iterator[bytes]:
        kept = self._kept.pop(name, None)
        if kept is not None:
            self._left += sum(len(c) for c in kept)
            yield from kept
            return
        seen: list[bytes] | None = []
        size = 0
        for chunk in self._store.chunks(name):
            if seen is not None:
                size += len(chunk)
                if size <= self._left:
                    seen.append(chunk)
                else:
                    seen = None  # too big to keep: the zip reads it again
            yield chunk
        if seen is not None:  # read to its end (the page stops early in a long file)
            self.keep(name, seen)


class _Records:
    """The records of one file, read lazily while the page is rendered (at most ``limit`` of them)."""

    def __init__(self, store: _Chunks, name: str, limit: int) -> None:
        self.store, self.name, self.limit = store, name, limit

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i, raw in enumerate(iter_lines(self.store.chunks(self.name))):
            if i >= self.limit:
                return
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield summarise(line)


class StagedWriter:
    """A write-only, unseekable file object that stages what is written as blocks of a block blob; ``commit``
    makes it visible. ``tell`` is what ``zipfile`` needs to write a zip to a stream."""

    def __init__(self, blob: BlockBlob, block_bytes: int = BLOCK_BYTES) -> None:
        self._blob = blob
        self._block_bytes = block_bytes
        self._buffer = bytearray()
        self._blocks: list[str] = []
        self._position = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        self._position += len(data)
        while len(self._buffer) >= self._block_bytes:
            self._stage(bytes(self._buffer[: self._block_bytes]))
            del self._buffer[: self._block_bytes]
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def _stage(self, data: bytes) -> None:
        self._blocks.append(block_id(len(self._blocks)))
        self._blob.stage(self._blocks[-1], data)

    def commit(self) -> int:
        commit_blocks(self._blob, self._blocks, bytes(self._buffer))
        self._buffer = bytearray()
        return self._position


def render_page(manifest: dict[str, Any], store: _Chunks, *, records_per_file: int = RECORDS_PER_FILE_ON_PAGE) -> Iterator[str]:
    """The page as it renders, piece by piece."""
    request_id = manifest["requestId"]
    prefix = f"{request_id}/"
    workspaces: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest.get("files", []):
        workspaces.setdefault(entry["workspace"], []).append(
            {
                "kind": entry["kind"],
                "count": entry["items"],
                "bytes": entry["bytes"],
                "sha256": entry["sha256"],
                "path": entry["name"].removeprefix(prefix),
                "records": _Records(store, entry["name"], records_per_file),
                "more": max(0, int(entry["items"]) - records_per_file),
            }
        )
    counts = manifest.get("counts", {})
    template = _environment.get_template("export.html.j2")
    return template.generate(
        request_id=request_id,
        status=manifest.get("status"),
        completed_at=manifest.get("completedAt"),
        workspaces=[{"id": ws, "files": files, "counts": counts.get(ws, {})} for ws, files in workspaces.items()],
        errors=manifest.get("errors", []),
        zip_file=zip_name(request_id).removeprefix(prefix),
    )


def _batched(pieces: Iterable[str], chars: int = 64 * 1024) -> Iterator[str]:
    """Jinja yields the page in tens of thousands of small pieces: encode and write them some 64 KB at a time."""
    batch: list[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= chars:
            yield "".join(batch)
            batch, size = [], 0
    if batch:
        yield "".join(batch)


def _zip_entry(archive: zipfile.ZipFile, name: str, size: int, chunks: Iterable[bytes]) -> None:
    info = zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size  # lets zipfile choose zip64 for a file that needs it
    with archive.open(info, "w") as member:
        for chunk in chunks:
            member.write(chunk)


def write_readable_export(store: BundleStore, manifest: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write the page and the zip of a finished export; record their names in ``manifest`` (written after
    this, by the caller) and return what the outcome's ``data.bundle`` adds."""
    request_id = manifest["requestId"]
    page, archive_name = report_name(request_id), zip_name(request_id)
    manifest["report"], manifest["zip"] = page, archive_name
    page_writer = StagedWriter(store.block_blob(page, content_type="text/html; charset=utf-8"))
    reader = _ReadOnce(store, READ_ONCE_BYTES)
    written: list[bytes] | None = []
    for piece in _batched(render_page(manifest, reader)):
        data = piece.encode("utf-8")
        page_writer.write(data)
        if written is not None:
            written.append(data)
            if page_writer.tell() > READ_ONCE_BYTES:
                written = None  # a page this long is read back for the zip
    page_bytes = page_writer.commit()
    if written is not None:
        reader.keep(page, written)
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")  # as put_json writes it
    zip_writer = StagedWriter(store.block_blob(archive_name, content_type="application/zip"))
    with zipfile.ZipFile(zip_writer, "w", allowZip64=True) as archive:  # type: ignore[call-overload]
        _zip_entry(archive, f"{request_id}/manifest.json", len(manifest_bytes), [manifest_bytes])
        _zip_entry(archive, page, page_bytes, reader.chunks(page))
        for entry in manifest.get("files", []):
            size = int(entry["bytes"])  # an empty file (most, over many workspaces) is not read back
            _zip_entry(archive, entry["name"], size, reader.chunks(entry["name"]) if size else [])
    zip_bytes = zip_writer.commit()
    log.info("readable export written", extra={"pageBytes": page_bytes, "zipBytes": zip_bytes})
    added: dict[str, Any] = {"report": page, "zip": archive_name}
    try:
        url, expires_at = store.download_url(archive_name, hours=settings.download_hours)
    except Exception as exc:  # noqa: BLE001 - the bundle stands without a link; `dsr link` issues one later
        log.warning("no download link could be issued", extra={"error": type(exc).__name__})
    else:
        added["download"] = {"url": url, "expiresAt": expires_at}
    return added
