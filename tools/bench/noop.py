"""The ceiling: a bare RPyC server whose methods do nothing, with server.py's PROTOCOL_CONFIG, so the only
difference between it and the product is the product's own work; and the same server returning a reservation
record, to show what the record reply alone costs. It runs as `python -m tools.bench --serve-noop PORT`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rpyc
from rpyc.utils.server import ThreadedServer

from database import iso
from records import Reservation, to_wire
from server import PROTOCOL_CONFIG
from tools.bench import (
    NOOP_CODE,
    NOOP_READY,
    SERVER_STOP_SECONDS,
    START_TIMEOUT_SECONDS,
)
from tools.harness import Child, start_child


class NoopService(rpyc.Service):
    """The same wire, threads and configuration as the product; the methods return at once."""

    def exposed_reserve(self, *args: Any) -> None:
        return None

    def exposed_reserve_record(
        self, event_id: int, quantity: int, customer: str, email: str, sector: str, category: str, *rest: Any
    ) -> tuple:
        """The second ceiling: no store, but the reply the record contract prescribes (a reservation as
        (field, value) pairs), built per call as the product builds it. What separates it from `noop` is
        the cost of the reply alone, on both sides of the wire."""
        sold = Reservation(NOOP_CODE, event_id, sector, quantity, customer, email, category, 10000, 10000 * quantity,
                           "confirmed", iso(time.time()), None)
        return to_wire(sold)

    def exposed_list_events(self) -> None:
        return None


def serve_noop(port: int) -> int:
    """Run the ceiling server until SIGTERM/SIGINT; prints its readiness line with the real port."""
    server = ThreadedServer(NoopService, hostname="127.0.0.1", port=port, protocol_config=PROTOCOL_CONFIG, auto_register=False)
    server._listen()  # listen before saying so; start() then only accepts
    print(f"{NOOP_READY} 127.0.0.1:{server.port}", flush=True)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


@contextlib.contextmanager
def noop_server(workdir: Path) -> Iterator[Child]:
    """The ceiling server as a child process; its address is `child.address`."""
    child = start_child("noop-server", ["-m", "tools.bench", "--serve-noop", "0"], NOOP_READY, log=workdir / "noop-server.log",
                        timeout=START_TIMEOUT_SECONDS)
    try:
        yield child
    finally:
        child.stop(SERVER_STOP_SECONDS)
