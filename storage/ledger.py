"""The ledger: every change to the inventory, appended in the transaction that made it, in commit order.

It is what the live feed follows (a sequence number per entry) and what an audit reads back; entries are
never changed or removed, so a follower that remembers a sequence number can always resume from it.
"""

from __future__ import annotations

from records import LedgerEntry
from storage.engine import Connection
from storage.rows import iso


def record(
    connection: Connection, now: float, action: str, code: str | None, event_id: int, sector: str | None, quantity: int | None,
    detail: str | None = None,
) -> None:
    connection.execute(
        "INSERT INTO ledger (at, action, code, event_id, sector, quantity, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now, action, code, event_id, sector, quantity, detail),
    )


def entries(connection: Connection, since: int, limit: int) -> tuple[LedgerEntry, ...]:
    rows = connection.execute(
        "SELECT seq, at, action, code, event_id, sector, quantity, detail FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
        (since, limit),
    ).fetchall()
    return tuple(LedgerEntry(seq, iso(at), action, code, event_id, sector, quantity, detail)
                 for seq, at, action, code, event_id, sector, quantity, detail in rows)


def end(connection: Connection) -> int:
    """The last sequence number written: where a follower that wants no history starts."""
    return connection.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]
