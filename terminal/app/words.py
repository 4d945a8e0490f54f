"""The words for the values the box office sends as codes (statuses, breaker states), so no code reaches the clerk."""

from __future__ import annotations

from terminal.app.i18n import Words

STATUS_WORDS = {
    "held": "held", "confirmed": "confirmed", "cancelled": "cancelled", "expired": "expired",
    "waiting": "waiting", "offered": "offered", "accepted": "accepted", "lapsed": "lapsed", "left": "left the list",
    "on_sale": "on sale", "paused": "paused",
    "closed": "working", "open": "not answering", "half-open": "being tried again",
}
"""Every status and breaker state as the catalogue's English msgid; the .po files translate them."""


def status_word(status: str, words: Words) -> str:
    return words(STATUS_WORDS.get(status, status))
