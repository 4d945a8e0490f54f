"""Every call to the box office runs on a worker thread, with the screen showing that it waits.

A call may take the whole client deadline (seconds, while servers fail over), so it never runs on the UI
thread: `run_call` marks a widget as loading, runs the call in a thread worker and hands the answer (or the
refusal, or the outage) back on the UI thread. `explain` turns what went wrong into what the clerk reads:
never an exception's class name, and for an outage what to do next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from textual.widget import Widget

from errors import BoxOfficeError, EventClosed, Forbidden, HoldExpired, InvalidRequest, NotFound, SoldOut, Unavailable
from terminal.app.i18n import Words

log = logging.getLogger("bilheteria.terminal.calls")
T = TypeVar("T")

HEADINGS: tuple[tuple[type[BoxOfficeError], str], ...] = (
    (SoldOut, "Sold out"),
    (NotFound, "Not found: check the code and the email"),
    (Forbidden, "The admin token was not accepted"),
    (EventClosed, "This event is not on sale now"),
    (HoldExpired, "The hold lapsed: its tickets went back on sale"),
    (InvalidRequest, "The box office could not accept this"),
    (BoxOfficeError, "The box office refused"),
)
"""The heading of each kind of refusal, most specific first: the first that matches is shown."""


def explain(exc: BoxOfficeError, words: Words) -> str:
    """One or two lines for the clerk: what happened in their language, then the box office's own words."""
    if isinstance(exc, Unavailable):
        return words("No ticket server answered. Start name_server.py and server.py, or start the terminal with "
                     "--server HOST:PORT of a running server.")
    heading = next(text for kind, text in HEADINGS if isinstance(exc, kind))
    return f"{words(heading)}\n{exc}"


def run_call(owner: Widget, call: Callable[[], T], done: Callable[[T], None], failed: Callable[[BoxOfficeError], None],
             busy: Widget | None = None) -> None:
    """Run `call()` in a thread worker; `done(answer)` or `failed(error)` then runs on the UI thread.
    `busy` (the owner by default) shows Textual's loading indicator until then."""
    shown = busy or owner
    shown.loading = True
    app = owner.app

    def finish(outcome: Callable[[], None]) -> None:
        """On the UI thread; a screen the clerk has left meanwhile is not drawn on (the answer still happened)."""
        if not owner.is_attached:
            log.info("an answer came back to a screen already closed")
            return
        shown.loading = False
        outcome()

    def job() -> None:
        try:
            answer = call()
        except BoxOfficeError as exc:
            log.info("call refused or unavailable: %s", exc)
            refusal = exc
            app.call_from_thread(finish, lambda: failed(refusal))
            return
        app.call_from_thread(finish, lambda: done(answer))

    owner.run_worker(job, thread=True, group="calls")
