"""A self-contained HTML page opened in a real headless Chromium, with the network off.

:func:`render` starts Chromium with a throw-away profile, drives it over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: the browser reads NUL-terminated JSON
commands on file descriptor 3 and writes responses and events on 4), loads the page from its
``file://`` URL, and returns what a test checks (:class:`Rendered`):

* the DOM as Chromium parsed it (serialized after the load event);
* console messages of level error or warning, uncaught script errors, log entries of level
  error or warning (CSP, network, deprecations) and every failed resource load;
* every URL the page tried to fetch other than the page itself and ``data:`` URLs;
* optionally a full-page PNG screenshot, ``width`` CSS pixels wide at a scale of 1.

The network is off twice over. Chromium's flags send every request to a proxy on the
discard port of loopback, also loopback requests (``<-loopback>``), and make every host name
unresolvable, so nothing can be sent even where the second layer does not apply (frame
navigations, hints like ``dns-prefetch``). DevTools then blocks every ``http``, ``https``,
``ws``, ``wss`` and ``ftp`` subresource before it reaches the network stack. Both layers
leave the attempt visible: ``Network.requestWillBeSent`` is reported for blocked requests
too, and the failure follows as ``Network.loadingFailed``.

Chromium and every process it started are killed (its process group, and whatever still
names the temporary directory on its command line), and the temporary directory (profile,
crash database, caches, stderr) is removed, also after a timeout or an error. There are no
sleeps: the pipe is read until the awaited response or event arrives, or the deadline
passes.

:func:`chromium_or_skip` finds the browser for a test or skips it (fails it when
``REQUIRE_CHROMIUM=1``, so a CI machine without the browser cannot pass silently).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

__all__ = [
    "BLOCKED_URLS",
    "NOT_FOUND",
    "NO_NETWORK_FLAGS",
    "BrowserError",
    "Rendered",
    "chromium_or_skip",
    "find_chromium",
    "render",
]

#: Why a browser test did not run (skip) or fails (``REQUIRE_CHROMIUM=1``).
NOT_FOUND = (
    "chromium not found (Debian: apt-get install chromium; or set CHROMIUM=/path): "
    "the report's browser tests did not run"
)

#: The names looked up on PATH when ``CHROMIUM`` is not set, in order.
NAMES = ("chromium", "chromium-browser", "google-chrome")

#: Chromium flags that leave no way out: every request goes to a proxy on loopback's discard
#: port (nothing listens there), loopback included, and no host name resolves.
NO_NETWORK_FLAGS = (
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)

#: Flags that keep the browser from phoning home and from doing anything but the page.
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--disable-sync",
    "--no-pings",
    "--mute-audio",
)

#: URL globs DevTools blocks before the request reaches the network stack (``file:`` and
#: ``data:`` stay allowed so a page's own file and inline images load).
BLOCKED_URLS = ("http:*", "https:*", "ws:*", "wss:*", "ftp:*")

#: Console API call types reported (``assert`` is an error in the console).
CONSOLE_TYPES = frozenset({"error", "warning", "assert"})
#: Log entry levels reported.
LOG_LEVELS = frozenset({"error", "warning"})

#: Seconds the browser gets to exit after ``Browser.close`` before it is killed.
CLOSE_SECONDS = 5.0
#: Bytes of Chromium's stderr shown in a :class:`BrowserError`, and at most that many lines.
STDERR_TAIL_BYTES = 8192
STDERR_TAIL_LINES = 30


class BrowserError(RuntimeError):
    """Chromium did not start, closed the pipe, crashed, refused a command or timed out."""


@dataclass(frozen=True)
class Rendered:
    """What Chromium made of the page."""

    #: The document serialized after the load event (doctype included).
    dom: str
    #: Console errors and warnings, uncaught exceptions, log entries and failed loads.
    console: list[str]
    #: Every URL the page tried to fetch, in order, each once; not the page, no ``data:``.
    requests: list[str]
    #: The PNG written, when one was asked for.
    screenshot: Path | None


def find_chromium() -> str | None:
    """The browser to run: ``CHROMIUM`` when set (a path or a name on PATH), else the first of
    :data:`NAMES` on PATH; None when there is none (or ``CHROMIUM`` names no executable)."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """The browser's path; skips the calling test when there is none, or fails it when the
    environment sets ``REQUIRE_CHROMIUM=1``."""
    found = find_chromium()
    if found:
        return found
    message = NOT_FOUND
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        message += f" (CHROMIUM={chosen!r} is not an executable)"
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def render(
    path: Path,
    *,
    screenshot: Path | None = None,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 60,
    chromium: str | None = None,
) -> Rendered:
    """Load the page at ``path`` in headless Chromium with the network off.

    The viewport is ``width`` x ``height`` CSS pixels at a device scale factor of 1; the
    screenshot covers the whole document (at least the viewport). ``timeout`` bounds the
    whole run, start to close. ``chromium`` is the executable (default :func:`find_chromium`).
    Raises :class:`BrowserError` (with the tail of Chromium's stderr) when the browser cannot
    be started, dies, refuses a command or does not finish in time; :class:`FileNotFoundError`
    when there is no page.
    """
    page = Path(path).resolve(strict=True)
    if not page.is_file():
        raise FileNotFoundError(f"not a file: {page}")
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserError(NOT_FOUND)
    deadline = time.monotonic() + timeout
    scratch = Path(tempfile.mkdtemp(prefix="render-chromium-"))
    try:
        browser = _Browser(executable, scratch, width, height, deadline, timeout)
        try:
            return browser.render(page.as_uri(), screenshot)
        finally:
            browser.stop()
    finally:
        _remove(scratch)


class _Browser:
    """One Chromium process and the DevTools session of its one page."""

    def __init__(
        self,
        executable: str,
        scratch: Path,
        width: int,
        height: int,
        deadline: float,
        timeout: float,
    ) -> None:
        self.executable = executable
        self.scratch = scratch
        self.width = width
        self.height = height
        self.deadline = deadline
        self.timeout = timeout
        self.session_id: str | None = None
        self.console: list[str] = []
        #: (requestId, url) of every request the page started, in order.
        self.started: list[tuple[str, str]] = []
        self.urls: dict[str, str] = {}
        #: loaderIds whose document has fired its load event.
        self.loaded: set[str] = set()
        self._responses: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._buffer = bytearray()
        self._scanned = 0
        self._stderr_path = scratch / "stderr.log"
        self._stderr: BinaryIO = self._stderr_path.open("wb")
        self._to_browser = -1
        self._from_browser = -1
        try:
            self.process = self._spawn()
        except BaseException:
            self._close_files()
            raise

    # -- process -----------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start Chromium with the DevTools pipe on its descriptors 3 (commands in) and 4
        (responses and events out), in a new session so its process group can be killed."""
        commands_read, self._to_browser = os.pipe()
        try:
            self._from_browser, events_write = os.pipe()
        except OSError:
            os.close(commands_read)
            raise
        # The child's ends are moved to 5 and above first, so that placing them on 3 and 4
        # cannot overwrite one with the other.
        try:
            child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD_CLOEXEC, 5)
            try:
                child_out = fcntl.fcntl(events_write, fcntl.F_DUPFD_CLOEXEC, 5)
            except OSError:
                os.close(child_in)
                raise
        finally:
            os.close(commands_read)
            os.close(events_write)
        os.set_blocking(self._to_browser, False)

        def place_pipe() -> None:  # runs in the child between fork and exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        profile = self.scratch / "profile"
        args = [
            self.executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={self.width},{self.height}",
            *NO_NETWORK_FLAGS,
            *QUIET_FLAGS,
        ]
        # Chromium keeps its crash database and caches under the XDG directories, not in the
        # profile: both go to the scratch directory as well.
        env = dict(
            os.environ,
            XDG_CONFIG_HOME=str(self.scratch / "config"),
            XDG_CACHE_HOME=str(self.scratch / "cache"),
        )
        try:
            # close_fds=False: descriptors 3 and 4 are placed by place_pipe and must survive;
            # every other descriptor Python opens is close-on-exec anyway.
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,
                close_fds=False,
                preexec_fn=place_pipe,
                start_new_session=True,
            )
        except OSError as error:
            raise BrowserError(f"cannot start {self.executable}: {error}") from error
        finally:
            os.close(child_in)
            os.close(child_out)

    def stop(self) -> None:
        """Close the browser if it still answers, then kill whatever is left of it."""
        with contextlib.suppress(BrowserError, OSError):
            self._close_gracefully()
        self._kill()
        self._close_files()

    def _close_gracefully(self) -> None:
        """``Browser.close``, then read until Chromium closes its end of the pipe."""
        if self.process.poll() is not None:
            return
        self.deadline = min(self.deadline, time.monotonic() + CLOSE_SECONDS)
        self._send("Browser.close", {}, session=False)
        while True:
            self._wait(self._from_browser, writing=False, what="closing")
            if not os.read(self._from_browser, 1 << 20):
                return

    def _kill(self) -> None:
        # The process group (Chromium's children stay in it), then any process outside it that
        # still names the scratch directory (Chromium's crash handler starts a session of its
        # own; its database is in the scratch directory).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        _kill_naming(self.scratch)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def _close_files(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_browser = self._from_browser = -1
        self._stderr.close()

    def error(self, message: str) -> BrowserError:
        """A :class:`BrowserError` carrying the tail of Chromium's stderr."""
        self._stderr.flush()
        try:
            with self._stderr_path.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                stream.seek(max(0, stream.tell() - STDERR_TAIL_BYTES))
                text = stream.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        tail = "\n".join(text.splitlines()[-STDERR_TAIL_LINES:]) or "(empty)"
        return BrowserError(f"{message}\n--- {self.executable} stderr (tail) ---\n{tail}")

    # -- the page ----------------------------------------------------------------------------
    def render(self, url: str, screenshot: Path | None) -> Rendered:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session_id = attached["sessionId"]
        for domain in ("Inspector", "Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        self.call("Network.setBlockedURLs", {"urls": list(BLOCKED_URLS)})
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        navigated = self.call("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise self.error(f"loading {url} failed: {navigated['errorText']}")
        loader = navigated["loaderId"]
        while loader not in self.loaded:
            self._read("waiting for the page's load event")

        document = self.call("DOM.getDocument", {"depth": 0})
        dom = self.call("DOM.getOuterHTML", {"nodeId": document["root"]["nodeId"]})["outerHTML"]
        if screenshot is not None:
            self._screenshot(screenshot)

        requests: list[str] = []
        for request_id, requested in self.started:
            if request_id == loader or requested.startswith("data:"):
                continue
            if requested not in requests:
                requests.append(requested)
        return Rendered(
            dom=dom, console=list(self.console), requests=requests, screenshot=screenshot
        )

    def _screenshot(self, path: Path) -> None:
        """The whole document (at least the viewport) as a PNG at a scale of 1."""
        metrics = self.call("Page.getLayoutMetrics")
        content = metrics["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": max(self.width, math.ceil(content["width"])),
            "height": max(self.height, math.ceil(content["height"])),
            "scale": 1,
        }
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "fromSurface": True, "clip": clip},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    # -- DevTools protocol -------------------------------------------------------------------
    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> dict[str, Any]:
        """Send a command and read (handling events) until its response; its result."""
        command_id = self._send(method, params or {}, session=session)
        while command_id not in self._responses:
            self._read(f"waiting for {method}")
        response = self._responses.pop(command_id)
        if "error" in response:
            raise self.error(f"{method} failed: {response['error']}")
        result: dict[str, Any] = response.get("result", {})
        return result

    def _send(self, method: str, params: dict[str, Any], *, session: bool) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session_id
        data = memoryview(json.dumps(message).encode() + b"\0")
        while data:
            self._wait(self._to_browser, writing=True, what=f"sending {method}")
            try:
                written = os.write(self._to_browser, data)
            except BlockingIOError:
                continue
            except BrokenPipeError as error:
                raise self._closed(f"sending {method}") from error
            data = data[written:]
        return self._next_id

    def _read(self, what: str) -> None:
        """Read one message and handle it (a response is kept for :meth:`call`)."""
        while True:
            end = self._buffer.find(b"\0", self._scanned)
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                break
            self._scanned = len(self._buffer)
            self._wait(self._from_browser, writing=False, what=what)
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise self._closed(what)
            self._buffer += chunk
        message: dict[str, Any] = json.loads(raw)
        if "id" in message:
            self._responses[message["id"]] = message
        else:
            self._event(message)

    def _wait(self, fd: int, *, writing: bool, what: str) -> None:
        """Until ``fd`` is ready, or :class:`BrowserError` at the deadline."""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(f"Chromium timed out after {self.timeout:g} s {what}")
            if writing:
                ready = select.select([], [fd], [], remaining)[1]
            else:
                ready = select.select([fd], [], [], remaining)[0]
            if ready:
                return

    def _closed(self, what: str) -> BrowserError:
        """The error for a pipe Chromium closed: it exited (or never started)."""
        remaining = max(0.0, min(self.deadline - time.monotonic(), CLOSE_SECONDS))
        try:
            code: int | None = self.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            code = None
        status = "is still running" if code is None else f"exited with status {code}"
        return self.error(f"Chromium closed the DevTools pipe {what}; it {status}")

    # -- events ------------------------------------------------------------------------------
    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method", "")
        params: dict[str, Any] = message.get("params", {})
        if "sessionId" not in message:  # the browser's own events
            if method == "Target.detachedFromTarget" and params.get("sessionId") == (
                self.session_id or ""
            ):
                raise self.error("Chromium detached the page")
            return
        if message["sessionId"] != self.session_id:
            return
        if method == "Runtime.consoleAPICalled":
            if params.get("type") in CONSOLE_TYPES:
                text = " ".join(_remote_text(arg) for arg in params.get("args", []))
                self.console.append(f"console.{params['type']}: {text}{_where(params)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description", "")
            first = described.splitlines()[0] if described else ""
            text = f"{details.get('text', 'exception')} {first}".strip()
            self.console.append(f"exception: {text}{_where(details)}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") in LOG_LEVELS:
                where = f" [{entry['url']}]" if entry.get("url") else ""
                self.console.append(
                    f"log.{entry['level']} ({entry.get('source', '?')}): {entry.get('text', '')}"
                    f"{where}"
                )
        elif method == "Network.requestWillBeSent":
            self._started(params["requestId"], params["request"]["url"])
        elif method in ("Network.webSocketCreated", "Network.webTransportCreated"):
            self._started(params.get("requestId", params.get("transportId", "")), params["url"])
        elif method == "Network.loadingFailed":
            failed = self.urls.get(params.get("requestId", ""), "(unknown URL)")
            reason = params.get("errorText") or f"blocked ({params.get('blockedReason', '?')})"
            if params.get("canceled"):
                reason += " (canceled)"
            self.console.append(f"failed to load {failed}: {reason}")
        elif method == "Page.lifecycleEvent":
            if params.get("name") == "load":
                self.loaded.add(params.get("loaderId", ""))
        elif method == "Inspector.targetCrashed":
            raise self.error("the page's renderer crashed")
        elif method == "Inspector.detached":
            raise self.error(f"DevTools detached from the page: {params.get('reason', '?')}")

    def _started(self, request_id: str, url: str) -> None:
        self.started.append((request_id, url))
        self.urls[request_id] = url


def _remote_text(value: dict[str, Any]) -> str:
    """A console argument as text (strings as they are)."""
    if "value" in value:
        raw = value["value"]
        return raw if isinstance(raw, str) else json.dumps(raw)
    for key in ("unserializableValue", "description"):
        if key in value:
            return str(value[key])
    return str(value.get("type", "?"))


def _where(params: dict[str, Any]) -> str:
    """`` (url:line)`` of a console call or exception, when known."""
    frames = params.get("stackTrace", {}).get("callFrames", [])
    if frames:
        return f" ({frames[0].get('url', '')}:{frames[0].get('lineNumber', 0) + 1})"
    if params.get("url"):
        return f" ({params['url']}:{params.get('lineNumber', 0) + 1})"
    return ""


def _kill_naming(scratch: Path) -> None:
    """SIGKILL every process whose command line names ``scratch`` (its own, never others)."""
    needle = os.fsencode(str(scratch))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _remove(scratch: Path) -> None:
    """Remove the scratch directory; a straggler still writing into it is killed first."""
    try:
        shutil.rmtree(scratch)
    except FileNotFoundError:
        return
    except OSError:
        _kill_naming(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
