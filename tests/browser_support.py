"""The HTML report in a real browser: headless Chromium (Debian's package) opens a report, and every plot has
laid out at a visible size, draws one mark per data point, and is not blank in a screenshot of its own
rectangle (assert_every_plot_rendered).

The report runs no scripts (its Content-Security-Policy is default-src 'none'), so the test drives the
browser from outside, over the Chrome DevTools Protocol on a pipe (--remote-debugging-pipe: JSON messages
ended by a NUL byte, the browser reading fd 3 and writing fd 4): the layout is read with getBoundingClientRect
and each plot's rectangle captured as a PNG."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1200, 900
TIMEOUT = 30.0


def browser_binary() -> str:
    """The browser's path; a missing browser fails the test (a skip would hide that nothing was checked)."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is not installed (looked for " + ", ".join(BROWSERS) + "): "
                "`apt-get install chromium` (hack/test.sh installs it when run as root with apt-get)")


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe, attached to one page."""

    def __init__(self, profile: Path) -> None:
        browser_read, self._write = os.pipe()
        self._read, browser_write = os.pipe()

        def browser_fds() -> None:  # in the child, before exec: the protocol's pipe on fds 3 and 4
            reading, writing = os.dup(browser_read), os.dup(browser_write)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [browser_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=browser_fds)
        os.close(browser_read)
        os.close(browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise ConnectionError(f"the browser closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        os.write(self._write, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]
            self._events.append(message)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == event for e in self._events):
            self._events.append(self._message(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, TimeoutError, ConnectionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._read)
        os.close(self._write)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels (one bytes object per pixel) of an 8-bit RGB or RGBA PNG, not interlaced."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,), kind = struct.unpack(">I", data[position:position + 4]), data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and not interlace, f"an unexpected PNG format {header!r}"
    size = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * size
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row's filter (PNG specification, section 9)
            left = row[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                nearest = min((abs(estimate - left), left), (abs(estimate - up), up), (abs(estimate - corner), corner),
                              key=lambda pair: pair[0])[1]
                row[i] = (row[i] + nearest) & 0xFF
        rows.append(row)
        previous = row
    pixels = [bytes(row[x:x + 3]) for row in rows for x in range(0, stride, size)]
    return width, height, pixels


# Every plot: where it lies on the page, what it says it draws, and its marks (line and interval plots draw a
# circle.point per data point, bar plots a rect.bar) that have a box inside the plot's.
LAYOUT = """JSON.stringify({
  sections: [...document.querySelectorAll('section.run')].map(s => s.className),
  plots: [...document.querySelectorAll('svg.plot')].map(svg => {
    const box = svg.getBoundingClientRect();
    const inside = m => { const b = m.getBoundingClientRect();
      return b.width > 0 && b.height > 0 && b.left >= box.left - 1 && b.right <= box.right + 1
        && b.top >= box.top - 1 && b.bottom <= box.bottom + 1; };
    const marks = [...svg.querySelectorAll('circle.point, rect.bar')];
    return {label: svg.getAttribute('aria-label'), kind: svg.dataset.kind, noData: svg.classList.contains('no-data'),
            points: Number(svg.dataset.points), marks: marks.length, drawn: marks.filter(inside).length,
            x: box.left + window.scrollX, y: box.top + window.scrollY, width: box.width, height: box.height};
  })
})"""


def rendered_plots(report: Path, profile: Path) -> tuple[list[str], list[dict[str, Any]], list[tuple[int, int, list[bytes]]]]:
    """The report's sections, its plots' layout, and a screenshot of each plot's rectangle."""
    browser = DevTools(profile)
    try:
        browser.page("Page.enable")
        browser.page("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        browser.page("Page.navigate", url=report.as_uri())
        browser.wait_for("Page.loadEventFired")
        layout = json.loads(browser.page("Runtime.evaluate", expression=LAYOUT, returnByValue=True)["result"]["value"])
        shots = []
        for plot in layout["plots"]:
            if not (plot["width"] and plot["height"]):  # nothing to capture: the layout's check names it
                shots.append((0, 0, []))
                continue
            clip = {key: plot[key] for key in ("x", "y", "width", "height")} | {"scale": 1}
            png = browser.page("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
            shots.append(png_pixels(base64.b64decode(png)))
    finally:
        browser.close()
    return layout["sections"], layout["plots"], shots


def assert_every_plot_rendered(report: Path, profile: Path) -> list[str]:
    html = report.read_text(encoding="utf-8")
    sections, plots, shots = rendered_plots(report, profile)
    assert sections == ["run " + kind for kind in re.findall(r'<section class="run (\w+)"', html)]
    assert len(plots) == html.count('<svg xmlns="http://www.w3.org/2000/svg" class="plot') > 0
    for plot, (width, height, pixels) in zip(plots, shots):
        name = f"plot {plot['label']!r}"
        assert plot["width"] >= 200 and plot["height"] >= 100, f"{name} laid out at {plot['width']}x{plot['height']}"
        assert (width, height) == (round(plot["width"]), round(plot["height"])), f"{name}: screenshot {width}x{height}"
        if not plot["noData"]:
            assert plot["marks"] == plot["points"] > 0, f"{name} draws {plot['marks']} marks for {plot['points']} points"
            assert plot["drawn"] >= (1 if plot["kind"] == "bar" else plot["points"]), f"{name}: marks outside the plot"
        background = max(set(pixels), key=pixels.count)
        drawn = sum(pixel != background for pixel in pixels) / len(pixels)
        assert len(set(pixels)) > 2 and drawn > 0.01, f"{name} is blank in the screenshot ({drawn:.2%} drawn)"
    return [plot["label"] for plot in plots]
