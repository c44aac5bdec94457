"""A headless Chromium, driven over the DevTools protocol with nothing but the standard library, to look at the
course's pages as a reader's browser shows them.

Chromium speaks the protocol over a pipe (`--remote-debugging-pipe`: commands in on descriptor 3, replies and events
out on descriptor 4, each a JSON message ended by a NUL byte), so no WebSocket client and no driver are needed.

    with Browser.start() as browser:
        visit = browser.visit("http://127.0.0.1:8000/index.html", width=390)
        visit.problems        # console errors, uncaught exceptions, requests that failed
        visit.evaluate("document.title")
        visit.screenshot(Path("index-390.png"))
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL = "apt-get install chromium (./kqlab test installs it as root on Debian)"
# What makes a headless Chromium start fast and stay quiet on a machine without a desktop or a network to ask.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


def executable() -> str | None:
    found = next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)
    return found or shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """The browser could not be started, or did not answer in time."""


@dataclass
class Visit:
    """One page, loaded at one width: what went wrong while loading it, and a way to ask it questions."""

    browser: Browser
    url: str
    width: int
    problems: list[str] = field(default_factory=list)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        reply = self.browser.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression[:60]}...: {reply['exceptionDetails'].get('text')} "
                               f"{reply['exceptionDetails'].get('exception', {}).get('description', '')}")
        return reply["result"].get("value")

    def screenshot(self, png: Path, full_page: bool = False) -> Path:
        options: dict[str, Any] = {"format": "png"}
        if full_page:
            options["captureBeyondViewport"] = True
            height = self.evaluate("document.documentElement.scrollHeight")
            options["clip"] = {"x": 0, "y": 0, "width": self.width, "height": min(height, 6000), "scale": 1}
        png.write_bytes(base64.b64decode(self.browser.call("Page.captureScreenshot", **options)["data"]))
        return png


class Browser:
    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int, profile: Path) -> None:
        self.process = process
        self._out, self._in = to_browser, from_browser
        self._profile = profile
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self.session = ""

    @classmethod
    def start(cls, timeout: float = 30) -> Browser:
        path = executable()
        if path is None:
            raise BrowserError(f"no Chromium: {INSTALL}")
        profile = Path(tempfile.mkdtemp(prefix="kqlab-chromium-"))
        commands_read, commands_write = os.pipe()
        replies_read, replies_write = os.pipe()

        def on_3_and_4() -> None:
            # In the child: the protocol's descriptors are 3 (commands) and 4 (replies). Out of the way first, so
            # that putting one in place cannot close the other.
            high_read, high_write = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10), \
                fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        # pass_fds names the child's 3 and 4, which on_3_and_4 sets up: those survive the closing of the others.
        process = subprocess.Popen(
            [path, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=on_3_and_4, start_new_session=True)
        os.close(commands_read)
        os.close(replies_write)
        browser = cls(process, commands_write, replies_read, profile)
        try:
            browser.deadline = timeout
            target = browser.call("Target.createTarget", url="about:blank")["targetId"]
            browser.session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.call(f"{domain}.enable")
        except BaseException:
            browser.close()
            raise
        return browser

    deadline: float = 30  # seconds any one command may take

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for descriptor in (self._out, self._in):
            try:
                os.close(descriptor)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # The protocol --------------------------------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> dict:
        """Sends a command (to the page's session once there is one) and returns its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + self.deadline
        while True:
            reply = self._receive(end, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def _receive(self, end: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer {waiting_for} in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium ended while we waited for {waiting_for}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _wait_for(self, method: str, within: float) -> bool:
        end = time.monotonic() + within
        while True:
            if any(event["method"] == method for event in self._events):
                return True
            try:
                self._events.append(self._receive(end, method))
            except BrowserError:
                return False

    # Pages ---------------------------------------------------------------------------------------------------------

    def visit(self, url: str, width: int, height: int = 900, settle: float = 0.3) -> Visit:
        """Loads `url` in a window `width` pixels wide (a phone's, with touch, below 500), and waits for it to load
        and its scripts to run."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 500)
        self._events.clear()
        self.call("Page.navigate", url=url)
        visit = Visit(self, url, width)
        if not self._wait_for("Page.loadEventFired", self.deadline):
            visit.problems.append(f"the page did not finish loading within {self.deadline:g} s")
        time.sleep(settle)  # scripts that run after the load event (the theme's, the navigation tree)
        self.call("Runtime.evaluate", expression="0")  # collects the events sent meanwhile
        visit.problems += self._problems()
        return visit

    def _problems(self) -> list[str]:
        found = []
        failed_requests = {}
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                what = details.get("exception", {}).get("description") or details.get("text")
                found.append(f"uncaught exception: {what}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console error: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                          for arg in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                if not entry.get("url", "").endswith("/favicon.ico"):
                    found.append(f"console error: {entry.get('text')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                failed_requests[params["requestId"]] = params["request"]["url"]
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"failed to load {failed_requests.get(params['requestId'], '?')}: "
                             f"{params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"].get("status", 200) >= 400 and \
                    not params["response"]["url"].endswith("/favicon.ico"):
                found.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
        return list(dict.fromkeys(found))
