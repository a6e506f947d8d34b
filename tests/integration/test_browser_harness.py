"""The headless-Chromium harness (:mod:`tests.support.browser`) can fail.

Each test writes a page to ``tmp_path`` and renders it in a real Chromium: a clean page
with inline SVG renders with nothing to report and a screenshot that shows the SVG; console
errors and uncaught exceptions are reported; every reference to the outside is recorded as a
request and nothing reaches even a server on loopback; a browser that dies, hangs or never
finishes loading ends in :class:`BrowserError` with nothing left running and no scratch
directory left behind.
"""

from __future__ import annotations

import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.browser import (
    NOT_FOUND,
    BrowserError,
    chromium_or_skip,
    find_chromium,
    render,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED = (255, 0, 0)
WHITE = (255, 255, 255)
OUTSIDE = "http://example.invalid"


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the harness makes its temporary directories during the test (empty after)."""
    where = tmp_path / "scratch"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def page(tmp_path: Path, body: str, *, head: str = "") -> Path:
    path = tmp_path / "page.html"
    path.write_text(
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>report</title>"
        "<style>body{margin:0;background:#fff;font:16px sans-serif}"
        "svg{position:absolute;top:0;left:0}</style>"
        f"{head}</head><body>{body}</body></html>\n",
        encoding="utf-8",
    )
    return path


def svg(circles: int) -> str:
    """A red circle centred on (50, 50), then ``circles - 1`` small blue ones to its right."""
    shapes = ['<circle cx="50" cy="50" r="40" fill="red"/>']
    shapes += [
        f'<circle cx="{120 + 20 * i}" cy="50" r="8" fill="blue"/>' for i in range(circles - 1)
    ]
    opening = '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="100">'
    return f"{opening}{''.join(shapes)}</svg>"


# -- PNG ---------------------------------------------------------------------------------------
def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        yield kind, data[at + 8 : at + 8 + length]
        at += 12 + length


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    kind, header = next(png_chunks(data))
    assert kind == b"IHDR" and len(header) == 13
    width, height = struct.unpack(">II", header[:8])
    return width, height


def png_pixel(data: bytes, x: int, y: int) -> tuple[int, ...]:
    """The RGB of one pixel of an 8-bit RGB/RGBA non-interlaced PNG (rows 0..y unfiltered)."""
    chunks = list(png_chunks(data))
    width, _, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    pixel_bytes = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * pixel_bytes
    previous = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - pixel_bytes] if i >= pixel_bytes else 0
            up = previous[i]
            corner = previous[i - pixel_bytes] if i >= pixel_bytes else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + nearest) & 0xFF
        previous = line
    return tuple(previous[x * pixel_bytes : x * pixel_bytes + 3])


# -- a clean page ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("width", "circles", "content_height", "png_height"),
    [
        pytest.param(1280, 3, 100, 2000, id="short-1280"),
        pytest.param(800, 7, 5000, 5000, id="tall-800"),
    ],
)
def test_clean_page_renders_with_nothing_to_report(
    chromium: str,
    tmp_path: Path,
    scratch: Path,
    width: int,
    circles: int,
    content_height: int,
    png_height: int,
) -> None:
    path = page(tmp_path, f'{svg(circles)}<div style="height:{content_height}px"></div>')
    shot = tmp_path / "page.png"

    rendered = render(path, screenshot=shot, width=width, chromium=chromium)

    assert rendered.console == []
    assert rendered.requests == []
    assert rendered.dom.count("<circle") == circles
    assert rendered.dom.startswith("<!DOCTYPE html>")
    assert rendered.screenshot == shot
    data = shot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    # the viewport is 2000 px high; a taller document is captured whole
    assert png_size(data) == (width, png_height)
    assert png_pixel(data, 50, 50) == RED
    assert png_pixel(data, 50, 99) == WHITE
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_without_a_screenshot_none_is_written(chromium: str, tmp_path: Path) -> None:
    rendered = render(page(tmp_path, svg(1)), chromium=chromium)

    assert rendered.screenshot is None
    assert list(tmp_path.rglob("*.png")) == []
    assert rendered.console == []


# -- console -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param('console.error("boom")', "console.error: boom", id="console.error"),
        pytest.param('throw new Error("kaput")', "exception: Uncaught Error: kaput", id="throw"),
        pytest.param('console.warn("careful")', "console.warning: careful", id="console.warn"),
        pytest.param('console.assert(false, "wrong")', "console.assert: wrong", id="assert"),
        pytest.param(
            'document.querySelector("#missing").remove()',
            "exception: Uncaught TypeError: Cannot read properties of null",
            id="type-error",
        ),
        pytest.param('console.log("fine"); console.info("fine")', None, id="log-is-not-reported"),
    ],
)
def test_console_errors_and_exceptions_are_reported(
    chromium: str, tmp_path: Path, script: str, expected: str | None
) -> None:
    path = page(tmp_path, f"<h1>Report</h1><script>{script}</script>")

    rendered = render(path, chromium=chromium)

    if expected is None:
        assert rendered.console == []
    else:
        assert len(rendered.console) == 1, rendered.console
        assert rendered.console[0].startswith(expected), rendered.console
        assert f"({path.as_uri()}:" in rendered.console[0]
    assert rendered.requests == []
    assert "<h1>Report</h1>" in rendered.dom


# -- the network -------------------------------------------------------------------------------
@pytest.mark.slow
def test_outside_references_are_recorded_and_the_page_still_renders(
    chromium: str, tmp_path: Path, scratch: Path
) -> None:
    image = f"{OUTSIDE}/x.png"
    sheet = "https://example.invalid/a.css"
    path = page(
        tmp_path,
        f'{svg(2)}<h1 style="margin-top:120px">Report</h1><img src="{image}" alt="">',
        head=f'<link rel=stylesheet href="{sheet}">',
    )
    shot = tmp_path / "page.png"

    rendered = render(path, screenshot=shot, chromium=chromium)

    assert sorted(rendered.requests) == sorted([image, sheet])
    assert f"failed to load {image}: blocked (inspector)" in rendered.console
    assert f"failed to load {sheet}: blocked (inspector)" in rendered.console
    assert "<h1" in rendered.dom and rendered.dom.count("<circle") == 2
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2000)
    assert png_pixel(data, 50, 50) == RED
    assert list(scratch.iterdir()) == []


#: A reference of each kind the page can make, and the URL it requests. Each of these delays
#: the load event, so its failure is reported too.
LOADED_BEFORE_LOAD_EVENT = [
    pytest.param(f'<img src="{OUTSIDE}/i.png" alt="">', f"{OUTSIDE}/i.png", id="img"),
    pytest.param(
        f'<link rel=stylesheet href="{OUTSIDE}/s.css">', f"{OUTSIDE}/s.css", id="stylesheet"
    ),
    pytest.param(f'<script src="{OUTSIDE}/s.js"></script>', f"{OUTSIDE}/s.js", id="script"),
    pytest.param(f'<iframe src="{OUTSIDE}/f.html"></iframe>', f"{OUTSIDE}/f.html", id="iframe"),
    pytest.param(
        f"<style>body{{background:url({OUTSIDE}/bg.png)}}</style>x",
        f"{OUTSIDE}/bg.png",
        id="css-background",
    ),
    pytest.param(
        f"<style>@font-face{{font-family:F;src:url({OUTSIDE}/f.woff2)}}"
        "p{font-family:F}</style><p>text</p>",
        f"{OUTSIDE}/f.woff2",
        id="font-face",
    ),
    pytest.param(
        f'<svg><image href="{OUTSIDE}/v.png" width="9" height="9"/></svg>',
        f"{OUTSIDE}/v.png",
        id="svg-image",
    ),
    pytest.param(f'<object data="{OUTSIDE}/o.pdf"></object>', f"{OUTSIDE}/o.pdf", id="object"),
    pytest.param('<img src="beside.png" alt="">', "beside.png", id="file-beside-the-page"),
]

#: Requests a script starts without delaying the load event: the attempt is recorded when
#: the script makes it, the failure may come after the page is read.
STARTED_BY_SCRIPT = [
    pytest.param(
        f'<script>fetch("{OUTSIDE}/api").catch(() => {{}})</script>',
        f"{OUTSIDE}/api",
        id="fetch",
    ),
    pytest.param(
        '<script>new WebSocket("wss://example.invalid/ws")</script>',
        "wss://example.invalid/ws",
        id="websocket",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("markup", "url", "failure_reported"),
    [pytest.param(*p.values, True, id=p.id) for p in LOADED_BEFORE_LOAD_EVENT]
    + [pytest.param(*p.values, False, id=p.id) for p in STARTED_BY_SCRIPT],
)
def test_every_kind_of_reference_is_recorded(
    chromium: str, tmp_path: Path, markup: str, url: str, failure_reported: bool
) -> None:
    path = page(tmp_path, markup)
    if "://" not in url:
        url = (tmp_path / url).as_uri()

    rendered = render(path, chromium=chromium)

    assert rendered.requests == [url]
    if failure_reported:
        assert any(url in message for message in rendered.console), rendered.console


@pytest.mark.slow
def test_data_urls_are_not_requests(chromium: str, tmp_path: Path) -> None:
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
    rendered = render(page(tmp_path, f'<img src="{gif}" alt="">'), chromium=chromium)

    assert rendered.requests == []
    assert rendered.console == []


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that answers everything; its port and what it got."""
    hits: list[str] = []
    handler = type("Recorder", (_Recorder,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield str(server.server_address[1]), hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_nothing_reaches_a_server_on_loopback(
    chromium: str, tmp_path: Path, loopback_server: tuple[str, list[str]]
) -> None:
    port, hits = loopback_server
    urls = [
        f"http://127.0.0.1:{port}/i.png",
        f"http://localhost:{port}/s.css",
        f"http://127.0.0.1:{port}/frame.html",
    ]
    path = page(
        tmp_path,
        f'<img src="{urls[0]}" alt=""><iframe src="{urls[2]}"></iframe>',
        head=f'<link rel=stylesheet href="{urls[1]}">',
    )

    rendered = render(path, chromium=chromium)

    assert sorted(rendered.requests) == sorted(urls)
    # the frame is a navigation, which DevTools does not block: the flags stop it
    assert f"failed to load {urls[2]}: net::ERR_PROXY_CONNECTION_FAILED" in rendered.console
    assert hits == []


# -- the harness failing -----------------------------------------------------------------------
def fake_browser(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for Chromium: records its pid and arguments, then ``body``."""
    script = tmp_path / "fake-chromium"
    lines = [
        "#!/bin/sh",
        f'echo $$ > "{tmp_path}/pid"',
        f'printf "%s\\n" "$@" > "{tmp_path}/args"',
        body,
    ]
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_browser_that_exits_at_once_is_an_error_with_its_stderr(
    tmp_path: Path, scratch: Path
) -> None:
    fake = fake_browser(tmp_path, 'echo "cannot open display (fake)" >&2\nexit 3')

    with pytest.raises(BrowserError) as raised:
        render(page(tmp_path, "x"), chromium=str(fake), timeout=30)

    message = str(raised.value)
    assert "Chromium closed the DevTools pipe" in message
    assert "exited with status 3" in message
    assert "cannot open display (fake)" in message
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_a_browser_that_never_answers_times_out_and_is_killed(
    tmp_path: Path, scratch: Path
) -> None:
    fake = fake_browser(tmp_path, 'echo "starting (fake)" >&2\nexec sleep 600')

    started = time.monotonic()
    with pytest.raises(BrowserError) as raised:
        render(page(tmp_path, "x"), chromium=str(fake), timeout=1)
    elapsed = time.monotonic() - started

    message = str(raised.value)
    assert re.search(r"timed out after 1 s (sending|waiting for) Target\.createTarget", message)
    assert "starting (fake)" in message
    assert elapsed < 15
    args = (tmp_path / "args").read_text().splitlines()
    assert "--remote-debugging-pipe" in args
    assert "--host-resolver-rules=MAP * ~NOTFOUND" in args
    assert not running(int((tmp_path / "pid").read_text()))
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_a_page_that_never_loads_times_out_and_leaves_nothing_running(
    chromium: str, tmp_path: Path, scratch: Path
) -> None:
    path = page(tmp_path, "<script>while (true) {}</script>")

    with pytest.raises(BrowserError, match="timed out after 4 s waiting for"):
        render(path, chromium=chromium, timeout=4)

    # every Chromium process names its scratch directory on its command line
    left = [
        proc.name
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and str(scratch).encode() in _cmdline(proc)
    ]
    assert left == []
    assert list(scratch.iterdir()) == []


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_missing_page_is_an_error_before_any_browser_starts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render(tmp_path / "absent.html", chromium="/nonexistent/chromium")


def test_a_browser_that_cannot_be_started_is_an_error(tmp_path: Path, scratch: Path) -> None:
    with pytest.raises(BrowserError, match="cannot start /nonexistent/chromium"):
        render(page(tmp_path, "x"), chromium="/nonexistent/chromium")
    assert list(scratch.iterdir()) == []


# -- finding the browser -----------------------------------------------------------------------
def test_chromium_is_taken_from_the_environment_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_browser(tmp_path, "exit 0")
    monkeypatch.setenv("CHROMIUM", str(fake))

    assert find_chromium() == str(fake)
    assert chromium_or_skip() == str(fake)


@pytest.mark.parametrize("chromium_variable", [None, "/nonexistent/chromium"])
def test_no_browser_skips_the_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chromium_variable: str | None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REQUIRE_CHROMIUM", raising=False)
    if chromium_variable is None:
        monkeypatch.delenv("CHROMIUM", raising=False)
    else:
        monkeypatch.setenv("CHROMIUM", chromium_variable)

    assert find_chromium() is None
    with pytest.raises(pytest.skip.Exception, match="chromium not found") as raised:
        chromium_or_skip()
    assert str(raised.value).startswith(NOT_FOUND)


def test_no_browser_fails_the_test_when_chromium_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("REQUIRE_CHROMIUM", "1")

    with pytest.raises(pytest.fail.Exception) as raised:
        chromium_or_skip()
    assert str(raised.value) == NOT_FOUND
