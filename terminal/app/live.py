"""What the servers push, brought onto the UI thread: availability, waitlist offers, breaker changes.

The client calls back on its own threads; Textual's widgets may only be touched on the app's. `Live` is the
one bridge: each callback is handed to `call_from_thread` (or run at once when already on the UI thread), and
dropped quietly once the app is closing, since nobody is left to show it to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from textual.app import App

from circuit_breaker import BreakerListener
from client_core import TicketClient
from errors import BoxOfficeError
from records import AvailabilityUpdate, Event, WaitlistEntry

log = logging.getLogger("bilheteria.terminal.live")


class Live(BreakerListener):
    """Subscriptions of the events on show, waitlist watches, and the breakers, delivered to `App` methods."""

    def __init__(self, app: App[Any], client: TicketClient, *, on_update: Callable[[AvailabilityUpdate], None],
                 on_offer: Callable[[WaitlistEntry], None], on_breaker: Callable[[str, str], None]) -> None:
        self.app = app
        self.client = client
        self.on_update = on_update
        self.on_offer = on_offer
        self.on_breaker = on_breaker
        self._followed: dict[int, Any] = {}
        self._lock = threading.Lock()
        client.add_breaker_listener(self)

    def deliver(self, handler: Callable[..., None], *args: Any) -> None:
        """Run `handler(*args)` on the UI thread, from any thread."""
        if threading.get_ident() == getattr(self.app, "_thread_id", None):
            handler(*args)
            return
        try:
            self.app.call_from_thread(handler, *args)
        except RuntimeError:
            log.debug("the app is closing; %s not shown", handler)

    def follow(self, events: tuple[Event, ...]) -> None:
        """Subscribe to every event not yet followed; run on a worker thread (a subscription is a remote call)."""
        for event in events:
            with self._lock:
                if event.id in self._followed:
                    continue
                self._followed[event.id] = None
            try:
                subscription = self.client.subscribe(event.id, lambda update: self.deliver(self.on_update, update))
            except BoxOfficeError as exc:
                log.info("no live updates for event %d: %s", event.id, exc)
                with self._lock:
                    self._followed.pop(event.id, None)
                continue
            with self._lock:
                self._followed[event.id] = subscription

    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str) -> WaitlistEntry:
        """Join with the offer pushed to this counter; on a worker thread."""
        return self.client.join_waitlist(event_id, quantity, customer, email, sector=sector,
                                         on_offer=lambda entry: self.deliver(self.on_offer, entry))

    def state_change(self, breaker: Any, old: str, new: str) -> None:
        self.deliver(self.on_breaker, breaker.name, new)

    def close(self) -> None:
        with self._lock:
            subscriptions, self._followed = list(self._followed.values()), {}
        for subscription in subscriptions:
            if subscription is not None:
                subscription.close()
