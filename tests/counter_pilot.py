"""Driving the counter app with Textual's Pilot as a clerk does: keys, clicks, and the screen read back as text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from client_core import TicketClient
from terminal.app.counter import CounterApp
from terminal.app.i18n import Words

SIZE = (80, 24)
Clerk = Callable[[CounterApp, Pilot[Any]], Awaitable[None]]


def at_the_counter(client: TicketClient, clerk: Clerk, *, language: str = "en", size: tuple[int, int] = SIZE, **options: Any) -> None:
    """Run the app headless at `size` while `clerk` drives it."""

    async def session() -> None:
        app = CounterApp(client, Words(language), **options)
        async with app.run_test(size=size) as pilot:
            await clerk(app, pilot)

    asyncio.run(session())


def screen_text(app: CounterApp) -> str:
    """What the screen shows now, line by line, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot: Pilot[Any], condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Let the app run until `condition()` holds (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s; the screen:\n{screen_text(pilot.app)}")  # type: ignore[arg-type]
        await pilot.pause(0.05)
    return value


async def until_shown(pilot: Pilot[Any], text: str, timeout: float = 15.0) -> str:
    return await until(pilot, lambda: text in screen_text(pilot.app) and screen_text(pilot.app), repr(text), timeout)  # type: ignore[arg-type]


def notified(app: CounterApp) -> str:
    """Every notification the app has on show (toasts wrap in a narrow box, so they are read whole from here)."""
    return "\n".join(f"{note.title}: {note.message}" for note in app._notifications)


async def until_notified(pilot: Pilot[Any], text: str, timeout: float = 15.0) -> str:
    return await until(pilot, lambda: text in notified(pilot.app) and notified(pilot.app), f"the notification {text!r}", timeout)  # type: ignore[arg-type]


async def type_into(pilot: Pilot[Any], field: str, text: str) -> None:
    """Focus a field of the current screen and type at its end, key by key."""
    pilot.app.screen.query_one(f"#{field}", Input).focus()
    await pilot.pause()
    await pilot.press("end")
    await pilot.press(*["space" if char == " " else char for char in text])


def value(app: CounterApp, field: str) -> str:
    return app.screen.query_one(f"#{field}", Input).value
