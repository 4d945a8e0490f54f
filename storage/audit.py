"""The audit: what must always hold, checked from the rows themselves, for tests and operators.

Per sector, capacity == available + held + confirmed, and the half-price counter equals the active
half-price tickets and stays within its limit; in a seated sector, the seats held are exactly those of the
active reservations, one per ticket, and no seat is in two active reservations. An empty list is a healthy inventory.
"""

from __future__ import annotations

from storage.engine import Connection


def problems(connection: Connection) -> list[str]:
    rows = connection.execute(
        "SELECT s.event_id, s.name, s.capacity, s.available, s.half_limit, s.half_taken, "
        "COALESCE(SUM(CASE WHEN r.status = 'held' THEN r.quantity END), 0), "
        "COALESCE(SUM(CASE WHEN r.status = 'confirmed' THEN r.quantity END), 0), "
        "COALESCE(SUM(CASE WHEN r.status IN ('held', 'confirmed') AND r.category = 'half' THEN r.quantity END), 0) "
        "FROM sectors s LEFT JOIN reservations r ON r.event_id = s.event_id AND r.sector = s.name "
        "GROUP BY s.event_id, s.name ORDER BY s.event_id, s.position"
    ).fetchall()
    found = []
    for event_id, name, capacity, available, half_limit, half_taken, held, confirmed, half_active in rows:
        where = f"event {event_id} sector {name!r}"
        if capacity != available + held + confirmed:
            found.append(f"{where}: capacity {capacity} != available {available} + held {held} + confirmed {confirmed}")
        if half_taken != half_active:
            found.append(f"{where}: half-price counter {half_taken} != active half-price tickets {half_active}")
        if half_limit is not None and half_active > half_limit:
            found.append(f"{where}: {half_active} half-price tickets over the limit of {half_limit}")
    return found + seat_problems(connection)


def seat_problems(connection: Connection) -> list[str]:
    """Seated sectors: the seats held are exactly those of the active reservations, one per ticket."""
    stray = connection.execute(
        "SELECT h.event_id, h.sector, h.seat, r.code, r.status FROM seat_holds h JOIN reservations r ON r.code = h.code "
        "WHERE r.status NOT IN ('held', 'confirmed') OR r.event_id <> h.event_id OR r.sector <> h.sector"
    ).fetchall()
    mismatched = connection.execute(
        "SELECT r.code, r.event_id, r.sector, r.quantity, r.seats, (SELECT COUNT(*) FROM seat_holds h WHERE h.code = r.code) "
        "FROM reservations r JOIN sectors s ON s.event_id = r.event_id AND s.name = r.sector "
        "WHERE s.seat_rows > 0 AND r.status IN ('held', 'confirmed')"
    ).fetchall()
    found = [f"event {event_id} sector {sector!r}: seat {seat} held by {status} reservation {code}"
             for event_id, sector, seat, code, status in stray]
    owners: dict[tuple[int, str, str], str] = {}
    for code, event_id, sector, quantity, seats, holds in mismatched:
        if len(seats.split(",")) != quantity or holds != quantity:
            found.append(f"reservation {code}: {quantity} tickets, seats {seats!r}, {holds} seats held")
        for seat in seats.split(","):
            other = owners.setdefault((event_id, sector, seat), code)
            if other != code:
                found.append(f"event {event_id} sector {sector!r}: seat {seat} in two active reservations, {other} and {code}")
    return found
