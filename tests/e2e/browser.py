"""A real headless Chromium, driven through chromedriver's W3C WebDriver API.

A tiny client (plain JSON over HTTP with urllib) rather than selenium: the
tests need five calls (open a page, run a script, read the DOM, take a
screenshot, quit). Chromium and chromedriver come from Debian's packages
(``hack/install-system-deps.sh``); when they are missing the fixture fails
with that hint, never skips.

:func:`png_pixels` decodes a screenshot (8-bit RGB/RGBA, as Chromium writes
them) so a test can check a colour without an imaging library.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--force-device-scale-factor=1",
]
INSTALL_HINT = (
    "install Debian's chromium and chromium-driver (`apt-get install -y chromium "
    "chromium-driver`, or `bash hack/install-system-deps.sh`)"
)


def find_binaries() -> tuple[str, str]:
    """(chromium, chromedriver), or FileNotFoundError saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p]
        raise FileNotFoundError(f"{' and '.join(missing)} not found on PATH: {INSTALL_HINT}")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process with one headless Chromium session."""

    def __init__(self, log_dir: Path) -> None:
        chromium, driver = find_binaries()
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="modelrollout-chromium-")
        self.log = (log_dir / "chromedriver.log").open("wb")
        self.process = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"chromedriver did not start (log: {log_dir})")
            time.sleep(0.2)
        options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self.session = str(self._call("POST", "/session", caps)["sessionId"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webdriver {method} {path}: {exc.read()[:500]!r}") from exc

    def _session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds args) and return its value."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def source(self) -> str:
        return str(self._session("GET", "/source"))

    def screenshot(self) -> bytes:
        """The viewport as a PNG."""
        return base64.b64decode(self._session("GET", "/screenshot"))

    def element_screenshot(self, css: str) -> bytes:
        """One element (the first that matches ``css``) as a PNG, as the browser drew it."""
        found = self._session("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))
        return base64.b64decode(self._session("GET", f"/element/{element}/screenshot"))

    def wait(self, script: str, timeout: float, what: str) -> Any:
        """Poll ``script`` until it returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.run(script)
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        except Exception:  # the browser may already be gone; the driver is stopped anyway
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def png_pixels(png: bytes, max_rows: int | None = None) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit, non-interlaced RGB or RGBA PNG.

    ``max_rows``: decode only the top rows (pure Python is slow on a whole page).
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, chunk = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, f"bit depth {depth}"
    assert color in (2, 6), f"colour type {color}"
    assert interlace == 0, "interlaced"
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height if max_rows is None else min(height, max_rows)):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        rgb = (
            bytes(b for i, b in enumerate(line) if i % channels < 3)
            if channels == 4
            else bytes(line)
        )
        rows.append(rgb)
    return width, height, rows
