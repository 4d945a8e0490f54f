"""Start the system's real processes for tests: free ports, readiness by output line, clean teardown."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port the kernel just handed out; good enough on a test machine with nothing racing for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    """A child process whose output is read by a thread, so a test can wait for a line without blocking."""

    name: str
    popen: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    _new: queue.Queue = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        """Block until a line containing `text` was printed; fail with the output so far if it never is."""
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if text in line:
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name} did not print {text!r} in {timeout} s; output:\n" + self.output())
            try:
                line = self._new.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.popen.wait()}) before printing {text!r}:\n" + self.output())
            if text in line:
                return line

    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        """kill -9: no goodbye, no flush, no unregister."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not go in time; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=timeout)


def start(name: str, args: list[str], ready: str, env: dict[str, str] | None = None, timeout: float = 20.0) -> Process:
    """Run `python <args>` from the project root and wait until it prints `ready`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    process = Process(name, popen)
    threading.Thread(target=process._pump, name=f"pump-{name}", daemon=True).start()
    try:
        process.wait_for_line(ready, timeout=timeout)
    except BaseException:
        process.stop()
        raise
    return process


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; the polling interval is not a synchronisation sleep."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - the condition may legitimately fail while the system settles
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s" + (f" (last error: {last_error!r})" if last_error else ""))


class Transcript:
    """A pexpect log sink that keeps everything a terminal program showed, for assertions at the end."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> None:
        self.into.append(text)

    def flush(self) -> None:
        """pexpect flushes its log after each read; nothing is buffered here."""


def plain_text(text: str) -> str:
    """Terminal output without its colour and cursor escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@contextmanager
def terminals(count: int, target: Callable[[int], object], name: str = "terminal", timeout: float = 60.0) -> Iterator[None]:
    """Run `target(n)` for n in range(count) on threads, each a simulated terminal; the body of the `with`
    runs meanwhile. On exit every thread must have finished within `timeout` and none may have raised:
    a hung terminal or an exception fails the test (the first exception is re-raised)."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread, which fails with it
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,), name=f"{name}-{n}") for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"terminals hung: {', '.join(hung)}"
    if failures:
        raise failures[0]
