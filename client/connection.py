"""Speaking to one ticket server: dial it within a deadline, make one call on it, and say how that went.

Every call, ordinary or on the callback line, goes through `invoke`: it takes the open connection (or dials
one, TLS or plain), bounds the call by what is left of its attempt's time, and turns the outcome into one of
three things the failover understands: an answer, one of our refusals (`translate`), or `Failed`, with
whether the request may have reached the server. Which server to try is not decided here (`client.failover`).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any, Protocol

import rpyc
from rpyc.core import consts
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel

from client.failover import Failed
from errors import REFUSALS, InvalidRequest
from net.channel import BoundedChannel, Limits
from net.registry_protocol import Address
from net.tls import TLSRefused, plain_text_refused
from net.tls import connect as tls_connect

CLIENT_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "include_local_traceback": False,
}


REPLY_LIMITS = Limits(frame_bytes=32 * 1024 * 1024, objects=4_000_000, depth=16)
"""What one frame a server sends may cost this terminal. Replies are bigger than requests and some are unbounded
by the API (every reservation of an event: 60 objects and 270 bytes each; a ledger page of 10,000 rows: 370,000
objects), so the caps allow about 66,000 reservations (18 MB) in one listing, and 16 levels where replies use 9
(tests/test_exhaustion.py measures them); a hostile server can cost a terminal about 150 MB, not the 4.7 GB one
1.5 MB frame once did."""


class ReplyChannel(BoundedChannel):
    """The terminal's side of the bounded channel (REPLY_LIMITS), recognising a TLS server's alert where a
    plain-text answer should start."""

    __slots__ = ()
    limits = REPLY_LIMITS

    def tls_met(self) -> Exception:
        return plain_text_refused()


def left(deadline: float) -> float:
    """What remains before `deadline`, never quite nothing: RPyC and sockets read 0 as "wait forever"."""
    return max(0.01, deadline - time.monotonic())


def close_at_once(connection: rpyc.Connection) -> None:
    """Close without RPyC's goodbye, which waits for the peer's answer: a hung server would never send it."""
    try:
        connection._channel.close()
        connection.close()
    except (OSError, EOFError):
        pass


def dial(address: Address, deadline: float, tls: ssl.SSLContext | None) -> rpyc.Connection:
    """A new connection (TLS when given a context) whose connect, handshake and root lookup all fit before `deadline`."""
    sock = tls_connect(address, left(deadline), tls)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = dict(CLIENT_CONFIG, sync_request_timeout=left(deadline))
    connection = connect_channel(ReplyChannel(SocketStream(sock)), rpyc.VoidService, config=config)
    try:
        connection.root  # noqa: B018 - fetched now, inside this attempt's time, and cached by RPyC
    except (OSError, EOFError):
        close_at_once(connection)
        raise
    return connection


def callattr(connection: rpyc.Connection, method: str, *args: Any) -> Any:
    """One CALLATTR message: look `method` up on the server's root and call it (`root.method(...)` would cost two)."""
    return connection.sync_request(consts.HANDLE_CALLATTR, connection.root, method, args, ())


class Lines(Protocol):
    """Where `invoke` gets its connection to a server and reports one that died under a call."""

    def open(self, address: Address, deadline: float) -> rpyc.Connection:
        """The open connection to `address`, or a new one dialled before `deadline` (raising what `dial` raises)."""
        ...

    def lost(self, address: Address, connection: rpyc.Connection) -> None: ...


class Pool:
    """The ordinary calls' connections: one per server, opened on first use and kept while it works."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._connections: dict[Address, rpyc.Connection] = {}

    def open(self, address: Address, deadline: float) -> rpyc.Connection:
        with self._lock:
            connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return connection
        connection = dial(address, deadline, self.tls)
        with self._lock:
            previous = self._connections.get(address)
            if previous is not None and not previous.closed:
                close_at_once(connection)
                return previous
            self._connections[address] = connection
        return connection

    def lost(self, address: Address, connection: rpyc.Connection) -> None:
        with self._lock:
            if self._connections.get(address) is connection:
                del self._connections[address]
        close_at_once(connection)

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            close_at_once(connection)


def invoke(lines: Lines, address: Address, timeout: float, method: str, *args: Any) -> tuple[rpyc.Connection, Any]:
    """One attempt of `method` on `address` within `timeout`, and the connection it went on: a refusal is raised
    as such, anything else that went wrong becomes `Failed`."""
    deadline = time.monotonic() + timeout
    try:
        connection = lines.open(address, deadline)
    except TLSRefused as exc:
        raise Failed(str(exc), sent=False, final=True) from None
    except (OSError, EOFError) as exc:
        raise Failed(f"cannot connect ({exc or type(exc).__name__})", sent=False) from None
    connection._config["sync_request_timeout"] = left(deadline)
    try:
        return connection, callattr(connection, method, *args)
    except (OSError, EOFError) as exc:
        lines.lost(address, connection)
        reason = "no answer in time" if isinstance(exc, TimeoutError) else f"connection lost ({exc or type(exc).__name__})"
        raise Failed(reason, sent=True) from None
    except Exception as exc:  # noqa: BLE001 - a remote exception arrives as a class made up on the spot
        raise translate(exc) from None


def translate(exc: Exception) -> Exception:
    """A remote exception as ours: refusals by name, the server's own `Unavailable` as a failure to route around."""
    remote_name = type(exc).__name__.rpartition(".")[2]
    message = str(exc.args[0]) if exc.args else remote_name
    if type(exc).__name__.startswith("errors.") and remote_name in REFUSALS:
        return REFUSALS[remote_name](message)
    if remote_name == "Unavailable":
        return Failed(f"server unavailable ({message})", sent=True)
    return InvalidRequest(f"the server rejected the call: {message.splitlines()[0] if message else remote_name}")
