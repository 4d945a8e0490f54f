"""The words of the customer's mail: a letter composed from the facts the outbox kept, at send time.

The store records what happened (a sale confirmed, a reservation cancelled, an event cancelled, tickets
offered from the waitlist) and the facts a customer needs; how that is said lives here, beside the mailer,
so changing a sentence never touches the store. A row written before the outbox kept facts carries its own
subject and body, and is sent as it was stored.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from records import OutboxMessage, format_money


class Letter(NamedTuple):
    subject: str
    body: str


SUBJECTS = {
    "confirmed": "Your tickets for {event} - {code}",
    "cancelled": "Reservation {code} cancelled - {event}",
    "event_cancelled": "{event} was cancelled - reservation {code}",
    "offered": "Tickets held for you from the waitlist - {event} - {code}",
}

OPENINGS = {
    "confirmed": "your purchase is confirmed.",
    "cancelled": "your reservation was cancelled and its tickets went back on sale.",
    "event_cancelled": "the event was cancelled by the organiser, so your reservation was cancelled. Refunds follow.",
    "offered": "tickets came back and, as you were first on the waitlist, they are held for you. Confirm them with "
    "this code before the hold runs out, or they pass to the next in line.",
}


def compose(message: OutboxMessage) -> Letter:
    """The subject and body of one outbox message."""
    if not message.facts:
        return Letter(message.subject, message.body)
    facts = json.loads(message.facts)
    currency = facts["currency"]
    seats = facts["seats"]
    body = "\n".join((
        f"Hello {facts['customer']},",
        "",
        OPENINGS[message.kind],
        "",
        f"Reservation: {facts['code']}",
        f"Event: {facts['event']}",
        f"Venue: {facts['venue']}",
        f"Starts: {facts['starts_at']}",
        f"Sector: {facts['sector']}" + (f", seats {' '.join(seats)}" if seats else ""),
        f"Tickets: {facts['quantity']} x {format_money(facts['unit_cents'], currency)} ({facts['category']} price)",
        f"Total: {format_money(facts['total_cents'], currency)}",
        "",
        "bilheteria",
    ))
    return Letter(SUBJECTS[message.kind].format(event=facts["event"], code=facts["code"]), body)
