"""Every reading of what a user types, in one place: HOST:PORT lists, whole numbers and seconds, `SECTOR=N`,
half-price limits, `Name:price:capacity` sectors, and where the admin token comes from.

The script commands (cli.py, through argparse) and the tools read the same things, so they read them with the
same functions and refuse the same typing with the same sentence. Each parser raises
`ValueError` with a message a user can act on; `argument` turns that into argparse's usage error (exit 2).
Whether a value is acceptable to the box office (a capacity below what was sold, a price) is the server's call.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

from client_core import parse_address

TOKEN_ENV = "BILHETERIA_ADMIN_TOKEN"


def argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` that reports our own message instead of argparse's generic one."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def host_port(text: str) -> str:
    """One HOST:PORT, checked by the one parser the client and the name server use too."""
    parse_address(text)
    return text.strip()


def host_ports(text: str) -> list[str]:
    """One HOST:PORT or several separated by commas (empty items are skipped)."""
    return [host_port(item) for item in text.split(",") if item.strip()]


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


def parse_sector(text: str) -> tuple[str, int, int]:
    """`Name:price_cents:capacity`; split from the right so a sector name may itself contain a colon."""
    parts = text.strip().rsplit(":", 2)
    try:
        name, price, capacity = parts[0].strip(), int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"{text.strip()!r} is not NAME:PRICE_CENTS:CAPACITY (e.g. Pista:25000:300)") from None
    return name, price, capacity


def parse_optional_limit(text: str) -> int | None:
    """A half-price limit: a whole number, or `none` for no limit."""
    if text.strip().casefold() == "none":
        return None
    return int(text)


def parse_sector_number(text: str) -> tuple[str, int]:
    """`SECTOR=N`; split from the right so a sector name may itself contain `=`. Whether N is acceptable is the server's call."""
    return sector_and_value(text, int, "SECTOR=N (e.g. VIP=80)")


def parse_half_limit(text: str) -> tuple[str, int | None]:
    """`SECTOR=N`, or `SECTOR=none` to lift the sector's half-price limit."""
    return sector_and_value(text, parse_optional_limit, "SECTOR=N or SECTOR=none (e.g. VIP=10)")


def sector_and_value(text: str, parse: Callable[[str], Any], form: str) -> tuple[str, Any]:
    """`SECTOR=VALUE`, the value read by `parse`; a value it refuses is reported as not being `form`."""
    name, _, value = text.rpartition("=")
    try:
        parsed = parse(value)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not {form}") from None
    return sector_name(name, text), parsed


def sector_name(name: str, text: str) -> str:
    """The name left of `=` in `text`; a blank one names no sector."""
    if not name.strip():
        raise ValueError(f"{text.strip()!r} names no sector")
    return name.strip()


def admin_token(given: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The token typed as --token, else the environment's (BILHETERIA_ADMIN_TOKEN), else none."""
    return given or environ.get(TOKEN_ENV) or None
