"""The argument checks at the wire: what a client sent, checked by exact type before any work is done.

Exact types (`type(value) is int`, never `isinstance`) because an argument may be a proxy of a client-side
object, and asking a proxy anything (its class, its length, its value) is a request to the client, which
could block or lie. A proxy therefore fails every check without being touched. Each check answers the value
itself, so the service reads `wire.integer(event_id, "event_id")` where it passes the argument on, and each
refusal is an `InvalidRequest` that names the argument and says what it should have been.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rpyc.core.netref import BaseNetref

from database import SectorSpec
from errors import InvalidRequest

MAX_TEXT = 1000
"""The longest string any argument may be (a seat label has its own, shorter limit)."""
MAX_INT = 2**53
"""The largest integer any argument may be: every client language represents it exactly."""
MAX_ITEMS = 50
"""The most sectors, seats or (sector, value) pairs one call may carry."""

CALLBACK_TYPES = frozenset({"builtins.function", "builtins.method", "builtins.builtin_function_or_method", "functools.partial"})
"""What a client may pass as a callback. A proxy answers `callable()` with True whatever it stands for, so the
remote type's name, which the proxy carries locally, is what tells a function from a list."""


def integer(value: Any, name: str, low: int = 0, high: int = MAX_INT) -> int:
    if type(value) is not int:
        raise InvalidRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


def text(value: Any, name: str, limit: int = MAX_TEXT) -> str:
    if type(value) is not str:
        raise InvalidRequest(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is too long ({len(value)} characters, at most {limit})")
    return value


def optional_text(value: Any, name: str) -> str | None:
    return None if value is None else text(value, name)


def optional_integer(value: Any, name: str) -> int | None:
    return None if value is None else integer(value, name)


def boolean(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise InvalidRequest(f"{name} must be True or False")
    return value


def callback(value: Any, optional: bool = False) -> Any:
    """A client-side function, passed by reference (or None when `optional`). Only what the proxy holds locally is
    looked at: `isinstance` or any attribute would be a request to the client, which could make it block or lie."""
    if value is None and optional:
        return None
    if not issubclass(type(value), BaseNetref) or object.__getattribute__(value, "____id_pack__")[0] not in CALLBACK_TYPES:
        raise InvalidRequest("callback must be a function or method of the caller, passed by reference (an RPyC callback)"
                             + (", or None" if optional else ""))
    return value


def sectors(value: Any) -> tuple[SectorSpec, ...]:
    if type(value) is not tuple or not 1 <= len(value) <= MAX_ITEMS:
        raise InvalidRequest(f"sectors must be a tuple of 1 to {MAX_ITEMS} (name, price_cents, capacity) tuples")
    specs: list[SectorSpec] = []
    for sector in value:
        if type(sector) is not tuple or len(sector) not in (3, 4):
            raise InvalidRequest("each sector must be a (name, price_cents, capacity) or (name, price_cents, rows, seats_per_row) tuple")
        size = tuple(integer(number, "capacity, rows or seats_per_row") for number in sector[2:])
        specs.append((text(sector[0], "sector name"), integer(sector[1], "price_cents"), *size))
    return tuple(specs)


def seats(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) is not tuple or not 1 <= len(value) <= MAX_ITEMS:
        raise InvalidRequest("seats must be a tuple of seat labels such as ('A1', 'A2')")
    return tuple(text(seat, "seat label in seats", 10) for seat in value)


def pairs(value: Any, name: str, check: Callable[[Any], Any]) -> tuple[tuple[str, Any], ...]:
    """A tuple of (sector name, value) pairs, each value passed through `check`."""
    if type(value) is not tuple or len(value) > MAX_ITEMS:
        raise InvalidRequest(f"{name} must be a tuple of at most {MAX_ITEMS} (sector, value) pairs")
    checked = []
    for pair in value:
        if type(pair) is not tuple or len(pair) != 2:
            raise InvalidRequest(f"each entry of {name} must be a (sector, value) pair")
        checked.append((text(pair[0], "sector"), check(pair[1])))
    return tuple(checked)
