"""The console the clerk types into, which other threads can talk over without garbling the prompt.

While the clerk sits at a prompt, two things may need the screen: a hold's clock ticking on the line above it,
and a waitlist offer pushed by the server. `PromptConsole` knows which prompt is showing, so it can print above
it and draw it again. It is apart from the menu because the menu decides what to ask, and this only how the
asking and the interruptions share one terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.text import Text, TextType

ERASE_LINE = "\r\x1b[2K"
LINE_UP = "\x1b[1A"
SAVE_CURSOR = "\x1b7"
RESTORE_CURSOR = "\x1b8"


class PromptConsole(Console):
    """A console that knows which prompt the clerk is sitting at, so other threads can talk over it.

    `announce` (from any thread) erases the prompt line, prints above it and draws the prompt again; what
    the clerk had half typed stays in the terminal's line buffer and is still sent with Enter. Inside
    `clock(line)`, every prompt gets `line()` drawn just above it, redrawn each second in place (cursor saved
    and restored, so typing is undisturbed). Off a terminal (a pipe, a file) nothing is redrawn: the clock is
    printed once per prompt and announcements are plain prints.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._screen = threading.RLock()
        self._prompt: TextType | None = None
        self._clock: Callable[[], Text] | None = None

    def input(self, prompt: TextType = "", *, markup: bool = True, emoji: bool = True, password: bool = False,
              stream: TextIO | None = None) -> str:
        with self._screen:
            if self._clock is not None:
                self.print(self._clock())
            self.print(prompt, markup=markup, emoji=emoji, end="")
            self._prompt = prompt
        try:
            return super().input(password=password, stream=stream)
        finally:
            with self._screen:
                self._prompt = None

    def announce(self, renderable: RenderableType) -> None:
        """Print above the prompt the clerk is at (or just print, when nobody is being asked anything)."""
        with self._screen:
            redraw = self._prompt is not None and self.is_terminal
            if redraw:
                self._raw(ERASE_LINE + (LINE_UP + ERASE_LINE if self._clock is not None else ""))
            self.print(renderable, soft_wrap=False)
            if redraw:
                if self._clock is not None:
                    self.print(self._clock())
                self.print(self._prompt or "", end="")

    @contextmanager
    def clock(self, line: Callable[[], Text], every: float = 1.0) -> Iterator[None]:
        """While inside, prompts show `line()` above them, ticking every `every` seconds on a terminal."""
        stop = threading.Event()
        with self._screen:
            self._clock = line
        ticker = threading.Thread(target=self._tick, args=(stop, every), name="hold-clock", daemon=True)
        if self.is_terminal:
            ticker.start()
        try:
            yield
        finally:
            stop.set()
            with self._screen:
                self._clock = None
            if ticker.is_alive():
                ticker.join(timeout=every)

    def _tick(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            with self._screen:
                if self._prompt is None or self._clock is None:
                    continue
                self._raw(SAVE_CURSOR + LINE_UP + ERASE_LINE)
                self.print(self._clock(), end="")
                self._raw(RESTORE_CURSOR)

    def _raw(self, codes: str) -> None:
        self.file.write(codes)
        self.file.flush()
