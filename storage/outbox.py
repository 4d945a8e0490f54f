"""The outbox: each customer's mail, written in the transaction that made the change it announces.

A mail exists if and only if its change does. The row keeps the facts of the letter (a JSON frozen at the
moment of the change), not its wording: the mailer words it when it sends (service/letters.py). Delivery is
leased, so replicas do not send the same message; a lease that lapses (its worker died) lets another take it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields

from records import OutboxMessage
from storage.engine import Connection
from storage.rows import ReservationRow

_FIELDS = tuple(field.name for field in fields(OutboxMessage))
COLUMNS = ", ".join(_FIELDS)


def _message(row: Sequence[object]) -> OutboxMessage:
    return OutboxMessage(**dict(zip(_FIELDS, row, strict=True)))  # type: ignore[arg-type]


def announce(connection: Connection, now: float, kind: str, reservation: ReservationRow) -> None:
    """Queue the customer's mail of `kind` about `reservation`, with the facts its letter needs."""
    name, venue, starts_at, currency = connection.execute(
        "SELECT name, venue, starts_at, currency FROM events WHERE id = ?", (reservation.event_id,)
    ).fetchone()
    facts = {
        "code": reservation.code,
        "customer": reservation.customer,
        "event": name,
        "venue": venue,
        "starts_at": starts_at,
        "sector": reservation.sector,
        "seats": reservation.seat_labels,
        "quantity": reservation.quantity,
        "unit_cents": reservation.unit_price_cents,
        "total_cents": reservation.total_cents,
        "currency": currency,
        "category": reservation.category,
    }
    connection.execute(
        "INSERT INTO outbox (created_at, kind, recipient, subject, body, facts, code, next_attempt_at) VALUES (?, ?, ?, '', '', ?, ?, ?)",
        (now, kind, reservation.email, json.dumps(facts, ensure_ascii=False), reservation.code, now),
    )


def any_due(connection: Connection, now: float) -> bool:
    return connection.execute(
        "SELECT 1 FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) LIMIT 1",
        (now, now),
    ).fetchone() is not None


def claim(connection: Connection, now: float, worker: str, limit: int, lease_seconds: float) -> tuple[OutboxMessage, ...]:
    """Lease up to `limit` due messages. The lease is checked twice: in the subquery that picks the rows, and on
    the row itself, because a PostgreSQL writer that waited for another claimer's row lock re-checks only the
    outer condition against the row as committed (READ COMMITTED), so without it both would take the row."""
    rows = connection.execute(
        f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ("
        f"SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
        f"AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY id LIMIT ?) "
        f"AND status = 'pending' AND (claimed_until IS NULL OR claimed_until < ?) RETURNING {COLUMNS}",
        (worker, now + lease_seconds, now, now, limit, now),
    ).fetchall()
    return tuple(sorted((_message(row) for row in rows), key=lambda message: message.id))


def mark_sent(connection: Connection, now: float, message_id: int) -> None:
    connection.execute("UPDATE outbox SET status = 'sent', sent_at = ?, claimed_until = NULL WHERE id = ?", (now, message_id))


def mark_logged(connection: Connection, now: float, message_ids: Sequence[int]) -> None:
    connection.executemany(
        "UPDATE outbox SET status = 'logged', sent_at = ?, claimed_until = NULL WHERE id = ?",
        [(now, message_id) for message_id in message_ids],
    )


def mark_failed(connection: Connection, retry_at: float, message_id: int, worker: str, error: str) -> None:
    """Only while `worker` still holds the lease: one whose lease lapsed must not clear another replica's."""
    connection.execute(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claimed_by = NULL, "
        "claimed_until = NULL WHERE id = ? AND status = 'pending' AND claimed_by = ?",
        (retry_at, error[:500], message_id, worker),
    )


def messages(connection: Connection, status: str | None) -> tuple[OutboxMessage, ...]:
    query = f"SELECT {COLUMNS} FROM outbox" + (" WHERE status = ?" if status else "") + " ORDER BY id"
    return tuple(_message(row) for row in connection.execute(query, (status,) if status else ()).fetchall())
