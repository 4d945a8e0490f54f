"""A real headless Chromium (Debian's package) driven through the Chrome DevTools protocol, for the web test.

Only what the test needs: open a page, run JavaScript, press keys and type text into whatever has the focus,
take a screenshot. The browser gets a fresh profile and no network of its own beyond the page it is sent to.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

import websocket

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0", "--window-size=1280,800")
KEYS = {
    "enter": ("Enter", "Enter", 13, "\r"), "tab": ("Tab", "Tab", 9, "\t"), "escape": ("Escape", "Escape", 27, ""),
    "down": ("ArrowDown", "ArrowDown", 40, ""), "up": ("ArrowUp", "ArrowUp", 38, ""),
    "right": ("ArrowRight", "ArrowRight", 39, ""), "left": ("ArrowLeft", "ArrowLeft", 37, ""),
}
CONTROL = 2
"""The DevTools modifier bit for Ctrl."""
RECORDER = """
(() => {
  const Original = window.WebSocket;
  window.__seen = "";
  const keep = (data) => {
    if (typeof data === "string") { window.__seen += data; }
    else if (data instanceof ArrayBuffer) { window.__seen += new TextDecoder().decode(data); }
    else if (data instanceof Blob) { data.text().then((text) => { window.__seen += text; }); }
  };
  window.WebSocket = function (url, protocols) {
    const socket = new Original(url, protocols);
    socket.addEventListener("message", (event) => keep(event.data));
    return socket;
  };
  window.WebSocket.prototype = Original.prototype;
})();
"""
"""Keeps everything the page's terminal is sent, so a test can tell what the screen shows (xterm.js draws on a canvas)."""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page, closed (and its profile with it) on the way out of `with`."""

    def __init__(self, profile: Path, timeout: float = 20.0) -> None:
        binary = chromium()
        assert binary, "chromium is not installed (apt-get install -y chromium)"
        self.profile = profile
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        page = next(target for target in pages if target["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its answer (events that arrive meanwhile are skipped)."""
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                assert "error" not in message, message
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", source=RECORDER)
        self.send("Page.navigate", url=url)

    def shown(self, text: str) -> bool:
        """Whether the page's terminal has been sent `text`, colour and cursor codes aside (the canvas itself cannot be read)."""
        plain = r"window.__seen.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')"
        return bool(self.evaluate(f"window.__seen !== undefined && {plain}.includes({json.dumps(text)})"))

    def click(self, x: int, y: int) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def press(self, *keys: str) -> None:
        """Keys by name (enter, down, ctrl+s, ...) as a keyboard sends them to the focused element."""
        for name in keys:
            modifiers, _, bare = name.rpartition("+")
            key, code, number, text = KEYS[bare] if bare in KEYS else (bare, f"Key{bare.upper()}", ord(bare.upper()), bare)
            flags = CONTROL if modifiers == "ctrl" else 0
            down = {"key": key, "code": code, "windowsVirtualKeyCode": number, "nativeVirtualKeyCode": number, "modifiers": flags}
            self.send("Input.dispatchKeyEvent", type="keyDown", **down, **({"text": text} if text and not flags else {}))
            self.send("Input.dispatchKeyEvent", type="keyUp", **down)

    def type(self, text: str) -> None:
        """Character by character, as key presses (xterm.js reads keys; pasted text could overtake the keys before it)."""
        for char in text:
            self.send("Input.dispatchKeyEvent", type="keyDown", key=char, text=char)
            self.send("Input.dispatchKeyEvent", type="keyUp", key=char)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
