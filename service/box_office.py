"""What every connection of one ticket server shares: the store, the admin token, the counters, the live feed.

RPyC makes one service instance per connection; they all hold the same `BoxOffice`. The admin token lives
here because checking it is the same for every connection and must leak nothing (constant time, whatever the
candidate looks like). Where the token comes from is here too: given, or generated once beside a SQLite file
and shared by every replica started on it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from database import Store
from errors import Forbidden
from service.counters import Counters
from service.floods import Floods
from service.live import LiveFeed
from service.throttle import FAILED_LOOKUPS, WAITLIST_JOINS, WRONG_TOKENS, Throttle


class BoxOffice:
    """What every connection shares: the store, the admin token, the counters, the live feed."""

    def __init__(self, store: Store, admin_token: str, server_id: str, throttle_scale: float = 1.0) -> None:
        self.store = store
        self.admin_token = admin_token.encode()
        self.server_id = server_id
        self.started = time.monotonic()
        self.counters = Counters()
        self.floods = Floods()
        self.lookups = Throttle(FAILED_LOOKUPS.scaled(throttle_scale), self.floods)
        self.tokens = Throttle(WRONG_TOKENS.scaled(throttle_scale), self.floods)
        self.joins = Throttle(WAITLIST_JOINS.scaled(throttle_scale), self.floods)
        self.live = LiveFeed(store, server_id)

    def check_token(self, token: Any, peer: str) -> None:
        """Constant time whatever the token looks like, so a refusal leaks nothing about the real one; wrong tokens
        are throttled per connection (`peer`, HOST:PORT) and per address, and logged in aggregate per address."""
        address = peer.rpartition(":")[0] or peer
        self.tokens.check(peer, address)
        candidate = token.encode("utf-8", "replace") if type(token) is str else b""
        valid = hmac.compare_digest(candidate, self.admin_token)
        if not valid or type(token) is not str:
            with self.counters.lock:
                self.counters.forbidden += 1
            self.tokens.charge(peer, address)
            self.floods.note("forbidden: wrong admin token", address, f"last from {peer}")
            raise Forbidden("admin token missing or wrong")


def is_database_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def shown_database(db: str) -> str:
    """The database as `status()` and the log may show it: a URL keeps its scheme, host, port and database name
    and loses everything that may hold a secret (the user and password, and the query, where `password=` may
    be); a SQLite path is shown as it is."""
    if not is_database_url(db):
        return db
    try:
        parts = urlsplit(db)
        where = parts.hostname or ""
        where = f"[{where}]" if ":" in where else where
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"{db.partition('://')[0]}://(a malformed URL, not shown)"
    return f"{parts.scheme}://{where}{port}{parts.path}"


def load_admin_token(explicit: str | None, db_path: str) -> tuple[str, str]:
    """The admin token and where it came from; generated once and kept beside the database (mode 0600).

    Replicas started together on a new database race to create the file: each writes a candidate to a
    private temporary file and links it into place, which succeeds for exactly one; everyone then reads
    the winner, which is complete because it was written before it was linked.
    """
    if explicit:
        return explicit, "the command line or environment"
    if is_database_url(db_path):
        raise ValueError("a PostgreSQL --db needs --admin-token (or BILHETERIA_ADMIN_TOKEN): every replica, on any host, must share it")
    token_file = Path(f"{db_path}.admin-token")
    if not token_file.exists():
        descriptor, candidate = tempfile.mkstemp(dir=token_file.parent, prefix=".admin-token-")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
            os.link(candidate, token_file)
        except FileExistsError:
            pass
        finally:
            os.unlink(candidate)
    return token_file.read_text().strip(), str(token_file)
