"""The readable export: the page (escaping, content, self-containment, a real headless browser) and the zip
(streamed, every file checked against the manifest's sha256, zip64 where a file needs it)."""

from __future__ import annotations

import hashlib
import html.parser
import io
import json
import shutil
import socket
import struct
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from shared.service import report
from shared.service.report import StagedWriter, _zip_entry, render_page, summarise, write_readable_export
from shared.settings import Settings
from tests.support.memory_store import MemoryStore

WS = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-1"
)
RID = "TCK-PAGE-1"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=http://127.0.0.1:9/pixel.png>"
QUOTES = '"\' onmouseover="alert(2)'
RTL = "\u202egnp.exe"  # a right-to-left override that would turn the text around
LONG = "A" * 100_000


def hostile_bundle() -> tuple[MemoryStore, dict[str, Any]]:
    store = MemoryStore()
    lines = [
        {
            "kind": "models",
            "id": f"model-{SCRIPT}",
            "source": "https://example.invalid/x",
            "data": {
                "name": f"churn {QUOTES}",
                "properties": {"createdTime": f"2026-01-02T03:04:05Z{IMG}", "description": LONG},
                "systemData": {
                    "createdBy": f"jane@contoso.com{RTL}",
                    "createdAt": "2026-01-01T00:00:00Z",
                    "lastModifiedBy": LONG,
                },
                "tags": {"owner": SCRIPT},
            },
            "matchedBy": "identity",
        },
        {"kind": "models", "id": "plain-model", "source": "s", "data": {"name": "plain", "createdBy": {"userName": "Jane Doe"}}},
    ]
    entry = store.add_jsonl(f"{RID}/sub/rg/ws-1/models.jsonl", lines) | {"kind": "models", "workspace": WS}
    manifest = {
        "schemaVersion": "1",
        "requestId": RID,
        "status": "completed",
        "errors": [{"code": "forbidden", "message": SCRIPT, "kind": "runs", "target": WS}],
        "completedAt": "2026-11-29T10:00:00Z",
        "files": [entry],
        "counts": {WS: {"models": 2}},
    }
    return store, manifest


class Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    parser = Tags()
    parser.feed(page)
    return parser


def test_every_hostile_value_is_escaped_and_the_page_stays_self_contained() -> None:
    # GIVEN records whose values carry markup, quotes, a huge string and right-to-left marks
    store, manifest = hostile_bundle()
    # WHEN the page is rendered
    page = "".join(render_page(manifest, store))
    parsed = parse(page)
    # THEN no value became markup: no script, no image, no event handler, no style or link element from the data
    tags = [tag for tag, _ in parsed.tags]
    assert "script" not in tags and "img" not in tags and "iframe" not in tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert tags.count("style") == 1  # the page's own inline CSS
    # AND the values are shown as text, escaped in the source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=http://127.0.0.1:9/pixel.png&gt;" in page
    assert "churn &#34;&#39; onmouseover=&#34;alert(2)" in page
    text = "".join(parsed.text)
    assert SCRIPT in text and f"churn {QUOTES}" in text
    # AND the right-to-left mark stays inside an isolated value, and the huge value is cut short
    assert f"jane@contoso.com{RTL}" in text
    assert "unicode-bidi: isolate" in page
    assert LONG not in page and "A" * 300 + "…" in page
    # AND nothing points outside the bundle: links are the relative .jsonl files, a CSP forbids scripts and fetches
    links = [attrs.get("href") for tag, attrs in parsed.tags if tag == "a"]
    assert links == ["sub/rg/ws-1/models.jsonl"]
    assert not any("src" in attrs for _, attrs in parsed.tags)
    csp = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp is not None and "default-src 'none'" in csp and "script-src" not in csp


def test_the_page_shows_counts_then_each_record_with_id_name_dates_and_identifying_fields() -> None:
    store, manifest = hostile_bundle()
    text = " ".join(" ".join(parse("".join(render_page(manifest, store))).text).split())
    assert WS in text
    assert "models (2)" in text
    assert "plain-model" in text and "plain" in text
    assert "createdAt: 2026-01-01T00:00:00Z" in text
    assert "createdBy.userName = Jane Doe" in text
    assert "How to read the .jsonl files" in text


def test_a_summary_takes_names_dates_and_identity_fields_wherever_they_sit() -> None:
    summary = summarise(
        {
            "id": "run-1",
            "data": {
                "properties": {"displayName": "nightly", "startTimeUtc": "2026-01-01T00:00:00Z"},
                "notifications": [{"emailRecipients": ["x"], "email": "jane@contoso.com"}],
                "assignedUser": {"objectId": "0000-1", "tenantId": "t"},
            },
        }
    )
    assert summary["name"] == "nightly"
    assert summary["dates"] == [("startTimeUtc", "2026-01-01T00:00:00Z")]
    assert ("notifications[0].email", "jane@contoso.com") in summary["identity"]
    assert ("assignedUser.objectId", "0000-1") in summary["identity"]


def test_the_zip_holds_the_manifest_the_page_and_every_file_each_matching_its_sha256() -> None:
    # GIVEN a finished bundle and staged blocks of 64 bytes (so the zip spans many blocks)
    store, manifest = hostile_bundle()
    # WHEN the readable export is written, then the manifest (last, as the processor does)
    added = write_readable_export(store, manifest, Settings())
    store.put_json(f"{RID}/manifest.json", manifest)
    # THEN the outcome gets the page, the zip and a download link
    assert added["report"] == f"{RID}/index.html" and added["zip"] == f"{RID}/{RID}.zip"
    assert added["download"] == {"url": f"memory://{RID}/{RID}.zip?sig=not-a-real-signature", "expiresAt": "2099-01-01T00:00:00Z"}
    assert store.content_types[added["report"]].startswith("text/html")
    assert store.content_types[added["zip"]] == "application/zip"
    # AND the zip opens, holds the manifest exactly as written, the page, and every file with its manifest sha256
    with zipfile.ZipFile(io.BytesIO(store.blobs[added["zip"]])) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(
            [f"{RID}/manifest.json", f"{RID}/index.html", *(f["name"] for f in manifest["files"])]
        )
        assert archive.read(f"{RID}/manifest.json") == store.blobs[f"{RID}/manifest.json"]
        assert archive.read(f"{RID}/index.html") == store.blobs[added["report"]]
        zipped_manifest = json.loads(archive.read(f"{RID}/manifest.json"))
        assert zipped_manifest["report"] == added["report"] and zipped_manifest["zip"] == added["zip"]
        for entry in zipped_manifest["files"]:
            assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"]


@pytest.mark.parametrize(("budget", "reads"), [(report.READ_ONCE_BYTES, 1), (10, 2)], ids=["kept", "over-the-bound"])
def test_the_zip_takes_what_the_page_read_whole_without_reading_it_again(monkeypatch, budget, reads) -> None:
    # GIVEN a finished bundle whose reads are counted, and the bound on what is kept between the page and the zip
    store, manifest = hostile_bundle()
    counted: dict[str, int] = {}
    read = store.chunks

    def chunks(name: str) -> Any:
        counted[name] = counted.get(name, 0) + 1
        return read(name)

    monkeypatch.setattr(store, "chunks", chunks)
    monkeypatch.setattr(report, "READ_ONCE_BYTES", budget)
    # WHEN the readable export is written
    added = write_readable_export(store, manifest, Settings())
    # THEN each file and the page are read once while they fit the bound, twice (page, then zip) beyond it
    assert counted[manifest["files"][0]["name"]] == reads
    assert counted.get(added["report"], 0) == reads - 1
    # AND the zip holds the same bytes either way
    with zipfile.ZipFile(io.BytesIO(store.blobs[added["zip"]])) as archive:
        assert archive.read(f"{RID}/index.html") == store.blobs[added["report"]]
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"]


def test_the_staged_writer_stages_fixed_blocks_and_zipfile_streams_into_it() -> None:
    store = MemoryStore()
    blob = store.block_blob("x.zip", "application/zip")
    writer = StagedWriter(blob, block_bytes=64)
    with zipfile.ZipFile(writer, "w") as archive:  # type: ignore[call-overload]
        _zip_entry(archive, "a.txt", 1000, [b"a" * 500, b"b" * 500])
    size = writer.commit()
    assert len(blob.staged) == -(-size // 64)
    assert all(len(block) == 64 for block in list(blob.staged.values())[:-1])
    with zipfile.ZipFile(io.BytesIO(store.blobs["x.zip"])) as archive:
        assert archive.read("a.txt") == b"a" * 500 + b"b" * 500


def test_a_file_too_big_for_a_plain_zip_entry_gets_zip64_headers() -> None:
    # GIVEN an entry whose manifest size is over 4 GiB (its bytes are not written here: the header is what counts)
    store = MemoryStore()
    out = StagedWriter(store.block_blob("big.zip"), block_bytes=1 << 20)
    with zipfile.ZipFile(out, "w") as archive:  # type: ignore[call-overload]
        _zip_entry(archive, "big.jsonl", zipfile.ZIP64_LIMIT + 1, [b"{}\n"])
    out.commit()
    data = store.blobs["big.zip"]
    # THEN the entry's local header carries the zip64 extra field (header id 0x0001)
    assert data[:4] == b"PK\x03\x04"
    name_length, extra_length = struct.unpack("<HH", data[26:30])
    assert extra_length >= 4 and data[30 + name_length : 32 + name_length] == b"\x01\x00"
    # AND the zip still opens and reads back
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("big.jsonl") == b"{}\n"


# -- a real browser ---------------------------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Listener:
    """A TCP port that records every connection: the browser's only proxy, so any network request lands here."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
            except OSError:
                first = "(no request line)"
            self.requests.append(first)
            conn.close()


# Chromium's own background services (time sync, sign-in, updates) call Google even headless; the page may call nobody.
BROWSER_OWN_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gvt2.com")


def page_requests(proxy: Listener) -> list[str]:
    def host(line: str) -> str:
        target = line.split(" ")[1] if " " in line else line
        return target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]

    return [r for r in proxy.requests if not host(r).endswith(BROWSER_OWN_HOSTS)]


def open_in_chromium(page: Path, proxy: Listener, profile: Path) -> str:
    browser = chromium()
    assert browser is not None
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--no-pings",
            f"--proxy-server=http://127.0.0.1:{proxy.port}",  # every request, loopback included, goes to the listener
            "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.integration
@pytest.mark.skipif(
    chromium() is None, reason="Chromium is not installed (apt-get install -y chromium); the page's escaping is checked above"
)
def test_a_headless_chromium_renders_the_page_with_no_script_and_no_network_request(tmp_path: Path) -> None:
    # GIVEN a control page that does fetch an image, to show that the listener sees a page's requests
    proxy = Listener()
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><p>control</p><img src="http://dsr-control.invalid/pixel.png">', encoding="utf-8")
    open_in_chromium(control, proxy, tmp_path / "profile-control")
    assert any("dsr-control.invalid" in r for r in page_requests(proxy)), proxy.requests
    # AND the hostile page on disk, with a fresh listener
    store, manifest = hostile_bundle()
    page = tmp_path / "index.html"
    page.write_text("".join(render_page(manifest, store)), encoding="utf-8")
    proxy = Listener()
    # WHEN Chromium opens it headless from file:// and dumps the DOM it built
    dom = parse(open_in_chromium(page, proxy, tmp_path / "profile"))
    # THEN it rendered the page: the heading and the hostile values as text
    assert "Your data export" in "".join(dom.text)
    assert SCRIPT in "".join(dom.text)
    # AND the built DOM holds no script and no image (the values stayed text), and the page made no request
    assert not any(tag in ("script", "img", "iframe") for tag, _ in dom.tags)
    assert page_requests(proxy) == []
