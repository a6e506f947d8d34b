"""dev.py's install shows what pip does while it does it: a first install takes a minute.

pip's own lines come through as they are written (no progress bars, no carriage returns),
and a line every few seconds says the install is still going while pip is quiet. These
tests run pip, or a stand-in for it, as a process of its own.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.dev import load_dev

dev = load_dev()


class Screen:
    """What a user sees, each line with the time it appeared."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines.extend((time.monotonic(), line) for line in done)
        return len(text)

    def flush(self) -> None:
        pass

    def when(self, fragment: str) -> float:
        return next(t for t, line in self.lines if fragment in line)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


FAKE_PIP = """
import time
print("Collecting alpha", flush=True)
print("Requirement already satisfied: beta in /somewhere", flush=True)
print("  Downloading alpha.whl\\r  Downloading alpha.whl (12 kB)", flush=True)
time.sleep(1.2)
print("Successfully installed alpha-1.0", flush=True)
"""


@pytest.mark.slow
def test_pip_lines_are_shown_as_they_come_and_a_quiet_pip_still_shows_life() -> None:
    screen = Screen()
    began = time.monotonic()
    status = dev.stream([sys.executable, "-c", FAKE_PIP], heartbeat=0.3, out=screen)
    ended = time.monotonic()
    assert status == 0
    assert screen.when("Collecting alpha") < ended - 0.8  # seen while pip was still at work
    quiet = [t for t, line in screen.lines if "still working" in line]
    assert quiet and all(screen.when("Collecting alpha") < t < ended for t in quiet)
    assert "  Downloading alpha.whl (12 kB)" in screen.text  # the redraw's last state only
    assert "Requirement already satisfied" not in screen.text
    assert "\r" not in screen.text and ended - began < 10


def tiny_wheel(folder: Path) -> Path:
    files = {
        "tiny/__init__.py": b"",
        "tiny-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tiny\nVersion: 0.1\n",
        "tiny-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(data)}")
    record.append("tiny-0.1.dist-info/RECORD,,")
    files["tiny-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@pytest.mark.slow
def test_a_real_pip_install_shows_pips_lines(tmp_path: Path) -> None:
    """Offline: a wheel made here, installed into a folder of its own."""
    assert "-q" not in dev.PIP_INSTALL and "--progress-bar" in dev.PIP_INSTALL
    wheel = tiny_wheel(tmp_path)
    screen = Screen()
    target = tmp_path / "site"
    dev.pip_install(
        Path(sys.executable),
        "--no-index",
        "--no-deps",
        "--target",
        str(target),
        str(wheel),
        out=screen,
    )
    assert (target / "tiny" / "__init__.py").exists()
    # Not byte-compiled at install (a third of a first install on 2 cores): Python does it
    # for what is imported, on first use.
    assert not (target / "tiny" / "__pycache__").exists()
    assert screen.when("tiny-0.1-py3-none-any.whl") <= screen.when("Successfully installed tiny")
    assert all(line.startswith("  ") for _, line in screen.lines)
    assert "\r" not in screen.text


@pytest.mark.slow
def test_a_failed_pip_install_raises_after_showing_why(tmp_path: Path) -> None:
    screen = Screen()
    missing = str(tmp_path / "missing-0.1-py3-none-any.whl")
    with pytest.raises(dev.subprocess.CalledProcessError):
        dev.pip_install(
            Path(sys.executable), "--no-index", "--target", str(tmp_path), missing, out=screen
        )
    assert "missing-0.1-py3-none-any.whl" in screen.text
