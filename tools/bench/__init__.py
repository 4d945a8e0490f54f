"""How fast is the box office, measured against what RPyC alone can do on this machine.

`python -m tools.bench [--quick] [--json FILE] [--clients 1,8,64,256] [--seconds 5]` starts everything it
measures as subprocesses and prints one table:

- the ceiling: a bare RPyC `ThreadedServer` whose methods do nothing (`python -m tools.bench --serve-noop PORT`),
  with server.py's PROTOCOL_CONFIG, so the only difference from the product is the product's own work;
  and the same server returning a reservation record, to show what the record reply alone costs;
- the product: `reserve(..., confirm=True)` (each call its own request id, so every call is a real sale
  committed with synchronous=FULL), `list_events` and `get_seat_map` (a 20x30 room), against `server.py`
  on a fresh database;
- 8 active terminals buying next to N idle connected ones, against the same 8 alone;
- two and three replicas sharing one SQLite file, terminals spread round-robin; the same on a throwaway
  PostgreSQL (pgcluster.py) when this machine has its binaries.

The load is a closed loop: every simulated terminal has its own connection and sends its next call as
soon as the last one answered, from a few separate load processes (threads inside), so the load generator
does not share a GIL with the server it measures. Every call takes the cheapest correct path, one
`HANDLE_CALLATTR` message, exactly as client_core does, on the ceiling and the product alike.

Afterwards it audits each database: tickets sold == capacity - available, no request id twice, every
code a terminal was given is in the database exactly once, and the store's invariants hold. A violation
is printed in red and the exit code is 1. The targets are ratios within one run and never change the
exit code: timings on a shared machine are information, not verdicts.

The parts: load.py (the load generator and one measurement), noop.py (the ceiling), systems.py (the product
under test and its audit), scenarios.py (levels, idle terminals, replicas), store.py (the store alone),
report.py (tables, targets, JSON), __main__.py (arguments and the run). Children are started and stopped
by the one process harness (tools/harness.py).
"""

from __future__ import annotations

from database import MAX_CAPACITY

PRODUCT_READY = "Ticket server listening on"
NOOP_READY = "No-op server listening on"
WARMUP_SECONDS = 0.3
MAX_LOAD_PROCESSES = 4
"""Two cores: more load processes would only fight the server for them."""
CALL_TIMEOUT_SECONDS = 30.0
"""Generous on purpose: at 256 terminals on two cores a slow answer is a data point, not an error."""
START_TIMEOUT_SECONDS = 30.0
SERVER_STOP_SECONDS = 15.0
"""SIGTERM lets a server finish in-flight calls and close its store; SIGKILL only after this long."""
SECTOR = "Pista"
SEATED_SECTOR = "Sala"
SEATED_ROOM = (20, 30)
"""The issue's example room: 20 rows of 30 seats, read whole by get_seat_map."""
CAPACITY = MAX_CAPACITY
"""The largest sector the store accepts, so no run sells out (a full run sells well under a million)."""
REFERENCE_CLIENTS = 64
NOOP_CODE = "NOOPNOOP"
FD_HEADROOM = 512
