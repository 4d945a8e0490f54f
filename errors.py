"""The vocabulary of refusals and failures shared by the server side and the client side.

Two families, kept apart on purpose: a `ReservationError` means the system answered and the answer is
"no" (sold out, unknown code, bad input), so retrying elsewhere is pointless and a circuit breaker must
treat it as a healthy reply. `Unavailable` means nobody could answer; the caller may try again later.
"""

from __future__ import annotations


class BoxOfficeError(Exception):
    """Root of every error the box office raises on purpose."""


class ReservationError(BoxOfficeError):
    """The request was understood and refused; the system is healthy."""


class SoldOut(ReservationError):
    """Not enough tickets left for the quantity asked."""


class NotFound(ReservationError):
    """No such event, sector or reservation (a wrong email is reported the same way as a wrong code)."""


class InvalidRequest(ReservationError):
    """The arguments are malformed, out of range or inconsistent with an earlier request."""


class Forbidden(ReservationError):
    """The admin token is missing or wrong."""


class EventClosed(ReservationError):
    """The event is paused or cancelled, so it takes no new reservations."""


class HoldExpired(ReservationError):
    """The hold lapsed before it was confirmed; its tickets went back on sale."""


class Unavailable(BoxOfficeError):
    """No server (or no database) could answer in time; nothing is known to have happened."""


REFUSALS: dict[str, type[ReservationError]] = {
    cls.__name__: cls for cls in (ReservationError, SoldOut, NotFound, InvalidRequest, Forbidden, EventClosed, HoldExpired)
}
"""Refusals by class name: how a client turns a remote refusal back into the right exception."""
