"""Name server: where clients learn which ticket servers are alive right now.

It speaks RPyC's TCP registry protocol, so stock `rpyc.utils.registry.TCPRegistryClient` (and RPyC servers with
auto_register) work against it unchanged: one brine-dumped ("RPYC", COMMAND, args) per fresh TCP connection,
answered with one brine-dumped result, then the connection is closed.

What it adds over stock `rpyc_registry`: one single-threaded event loop over non-blocking sockets, so a client that
stays silent, sends half a request, sends garbage or sends a huge blob is cut off by a deadline, a size cap or a
validation error, and never delays anybody else's answer.

Registrations are soft state: an entry not refreshed within `ttl` seconds is gone, and nothing is persisted, because
servers re-register every couple of seconds; a restarted name server is complete again after one heartbeat.

With a certificate and key it speaks only TLS, handshaking without blocking the loop (a client that stalls in
its handshake meets the same deadline as one that stalls in its request). The protocol itself (requests, `exchange`)
is in net/registry_protocol.py, shared with the ticket servers and the terminals; cutting a request out of the
byte stream (the size cap and the deadline) is in net/framing.py. This module imports only net/.

    python name_server.py [--host 127.0.0.1] [--port 18811] [--ttl 6] [--certfile CERT --keyfile KEY]
    (or BILHETERIA_NS_HOST / _NS_PORT / _NS_TTL / _NS_CERTFILE / _NS_KEYFILE; flags win over the environment)
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn, Self, TypeVar

from rpyc.core import brine

from net import tls
from net.framing import RequestFrame
from net.registry_protocol import Address, BadRequest, decode_request

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18811
DEFAULT_TTL = 6.0

log = logging.getLogger("bilheteria.name_server")

T = TypeVar("T")


class Registry:
    """Who serves which name, as last heard. No sockets here, and the clock is injectable, so tests never sleep.

    Servers of a name are kept in first-registration order (heartbeats refresh without reordering), so `query`
    answers oldest-first and the order is stable while the same servers stay up.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._servers: dict[str, dict[Address, float]] = {}  # NAME -> {address: last heard}

    def register(self, names: Iterable[str], address: Address) -> None:
        self.prune()  # an expired entry that re-registers is a new arrival, not a refresh
        now = self._clock()
        for name in names:
            servers = self._servers.setdefault(name.upper(), {})
            if address not in servers:
                log.info("registered %s at %s:%d", name.upper(), *address)
            servers[address] = now

    def unregister(self, address: Address) -> None:
        for name, servers in list(self._servers.items()):
            if servers.pop(address, None) is not None:
                log.info("unregistered %s at %s:%d", name, *address)
                if not servers:
                    del self._servers[name]

    def query(self, name: str) -> tuple[Address, ...]:
        self.prune()
        return tuple(self._servers.get(name.upper(), ()))

    def names(self, host: str | None = None) -> tuple[str, ...]:
        """All names with a live server, or only those with a server on `host`."""
        self.prune()
        return tuple(name for name, servers in self._servers.items() if host is None or any(h == host for h, _ in servers))

    def prune(self) -> None:
        now = self._clock()
        for name, servers in list(self._servers.items()):
            for address, heard in list(servers.items()):
                if now - heard >= self.ttl:
                    del servers[address]
                    log.info("pruned %s at %s:%d (silent for %.1f s)", name, *address, now - heard)
            if not servers:
                del self._servers[name]


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer: Address
    frame: RequestFrame[tuple[str, tuple]]
    outbox: bytes = b""
    plain: bool = True
    """Not yet wrapped: a TLS name server first looks at the first byte, to tell a plain-text client apart."""
    handshaking: bool = False
    waiting_for: int = selectors.EVENT_READ


class NameServer:
    """The registry behind a single-threaded selectors loop. Binds in the constructor, so `.port` is known
    at once (port 0 picks a free one). With `tls_context` every connection must handshake first. Use
    `serve_forever()` + `close()`, or `with NameServer(port=0) as ns:` to serve from a background thread for the
    duration of the block.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, ttl: float = DEFAULT_TTL, *,
                 deadline: float = 2.0, max_request: int = 4096, max_connections: int = 1024,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.registry = Registry(ttl)
        self.tls_context = tls_context
        self.deadline = deadline  # a connection must have its answer by then, whatever it sends
        self.max_request = max_request
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=256)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()  # lets close() interrupt select() from any thread
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._connections: dict[socket.socket, _Connection] = {}  # in opening order: oldest first
        self._serving = self._stopping = self._released = False
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self._serving = True
        prune_every = min(0.5, self.registry.ttl / 4)
        next_prune = time.monotonic() + prune_every
        try:
            while not self._stopping:
                wake_at = next_prune
                if self._connections:
                    wake_at = min(wake_at, next(iter(self._connections.values())).frame.due)
                for key, events in self._selector.select(max(0.0, wake_at - time.monotonic())):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                    elif key.fileobj not in self._connections:
                        continue  # dropped earlier in this batch (evicted to make room)
                    else:
                        self._serve(key.data, events)
                now = time.monotonic()
                for conn in list(self._connections.values()):
                    if not conn.frame.expired(now):
                        break
                    log.info("closed %s:%d: no complete exchange within %.1f s", *conn.peer, self.deadline)
                    self._drop(conn)
                if now >= next_prune:
                    self.registry.prune()
                    next_prune = now + prune_every
        finally:
            self._release()

    def close(self) -> None:
        """Stop serving; safe from another thread or a signal handler."""
        self._stopping = True
        if not self._serving:
            self._release()
        else:
            try:
                self._wake_w.send(b"!")
            except OSError:
                pass  # already stopped, or a wake-up is already pending
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, name=f"name-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        for _ in range(64):  # bounded, so a connection flood cannot starve the requests already read
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of file descriptors: make room
                log.warning("accept failed: %s", exc)
                if self._connections:
                    self._drop(next(iter(self._connections.values())))
                return
            if len(self._connections) >= self.max_connections:
                oldest = next(iter(self._connections.values()))
                log.info("closed %s:%d: %d connections open, dropping the oldest", *oldest.peer, len(self._connections))
                self._drop(oldest)
            sock.setblocking(False)
            conn = _Connection(sock, peer[:2], RequestFrame(decode_request, self.max_request, time.monotonic(), self.deadline))
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _serve(self, conn: _Connection, events: int) -> None:
        try:
            self._advance(conn)
        except Exception:  # a bug met by one client must not take the name server away from all the others
            log.exception("dropped %s:%d after an internal error", *conn.peer)
            if conn.sock in self._connections:
                self._drop(conn)

    def _advance(self, conn: _Connection) -> None:
        """Take the connection as far as it goes without waiting: TLS handshake, request, answer.

        Each step reads or writes until the socket (or the TLS layer) would block, so plaintext already
        decrypted and buffered inside the TLS object, which select() cannot see, is never left behind.
        """
        try:
            if conn.plain and self.tls_context is not None and not self._start_tls(conn):
                return
            if conn.handshaking:
                conn.sock.do_handshake()
                conn.handshaking = False
            if not conn.outbox and not self._read(conn):
                return
            self._write(conn)
        except (ssl.SSLWantReadError, BlockingIOError):
            self._wait(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._wait(conn, selectors.EVENT_WRITE)
        except OSError as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
            log.warning("dropped %s:%d: TLS handshake failed (%s)", *conn.peer, reason or type(exc).__name__)
            self._drop(conn)

    def _start_tls(self, conn: _Connection) -> bool:
        """Wrap the socket once the client's first byte is in; a plain-text client is told so and dropped."""
        first = conn.sock.recv(1, socket.MSG_PEEK)
        if not first:
            self._drop(conn)
            return False
        if not tls.starts_handshake(first):
            log.warning("dropped %s:%d: a plain-text client, but this name server speaks TLS", *conn.peer)
            self._refuse_plain_text(conn)
            return False
        self._selector.unregister(conn.sock)
        del self._connections[conn.sock]
        assert self.tls_context is not None
        conn.sock = self.tls_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        conn.plain, conn.handshaking = False, True
        self._connections[conn.sock] = conn
        self._selector.register(conn.sock, conn.waiting_for, conn)
        return True

    def _refuse_plain_text(self, conn: _Connection) -> None:
        """Read what arrived (so closing sends no reset that could discard the alert), answer with the alert.
        One read: a registry request fits in `max_request`, and a client that sends more gets no more of our time."""
        try:
            conn.sock.recv(self.max_request)
        except OSError:
            pass
        try:
            conn.sock.send(tls.PROTOCOL_VERSION_ALERT)
        except OSError:
            pass
        self._drop(conn)

    def _wait(self, conn: _Connection, event: int) -> None:
        if conn.sock in self._connections and conn.waiting_for != event:
            self._selector.modify(conn.sock, event, conn)
            conn.waiting_for = event

    def _read(self, conn: _Connection) -> bool:
        """Read until the request is complete (True) or the socket would block (raises); False once dropped."""
        while True:
            try:
                chunk = conn.sock.recv(conn.frame.room())
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except OSError:
                chunk = b""
            if not chunk:
                self._drop(conn)
                return False
            try:
                request = conn.frame.feed(chunk)
            except BadRequest as exc:
                log.warning("dropped %s:%d: %s", *conn.peer, exc)
                self._drop(conn)
                return False
            if request is not None:
                conn.outbox = brine.dump(self._answer(*request, host=conn.peer[0]))
                return True

    def _answer(self, command: str, args: tuple, host: str) -> object:
        if command == "QUERY":
            return self.registry.query(args[0])
        if command == "REGISTER":
            self.registry.register(args[0], (host, args[1]))
        elif command == "UNREGISTER":
            self.registry.unregister((host, args[0]))
        else:
            return self.registry.names(args[0])
        return "OK"

    def _write(self, conn: _Connection) -> None:
        """Send the answer until done (then close) or until the socket would block (raises)."""
        while conn.outbox:
            try:
                conn.outbox = conn.outbox[conn.sock.send(conn.outbox):]
            except BlockingIOError:
                self._wait(conn, selectors.EVENT_WRITE)
                return
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except OSError:  # e.g. UNREGISTER: the stock client hangs up without reading the answer
                conn.outbox = b""
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        del self._connections[conn.sock]
        self._selector.unregister(conn.sock)
        conn.sock.close()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        for conn in list(self._connections.values()):
            self._drop(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        log.info("stopped")


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a ValueError: one line, not the usage text and a second line."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


_VALUES = (
    ("host", f"address to listen on (default {DEFAULT_HOST})"),
    ("port", f"TCP port, 0 for a free one (default {DEFAULT_PORT})"),
    ("ttl", f"seconds a registration lives (default {DEFAULT_TTL:g})"),
    ("certfile", "PEM certificate: speak only TLS (with --keyfile)"),
    ("keyfile", "PEM private key of --certfile"),
)


@dataclass(frozen=True)
class NameServerConfig:
    """What one name server is started with: each setting from its flag, else BILHETERIA_NS_<NAME>, else the default."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    """0 picks a free port (the readiness line says which)."""
    ttl: float = DEFAULT_TTL
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def parse(cls, argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> NameServerConfig:
        """The configuration of a command line and an environment; a ValueError whose message is the one line to show."""
        environ = os.environ if environ is None else environ
        parser = _Parser(description="Bilheteria name server (RPyC TCP registry protocol).")
        for name, what in _VALUES:
            parser.add_argument(f"--{name}", help=f"{what}; env BILHETERIA_NS_{name.upper()}")
        args = parser.parse_args(argv)

        def setting(name: str, convert: Callable[[str], T], default: T) -> T:
            variable = f"BILHETERIA_NS_{name.upper()}"
            raw = getattr(args, name) if getattr(args, name) is not None else environ.get(variable) or None
            if raw is None:
                return default
            try:
                return convert(raw)
            except ValueError as exc:
                raise ValueError(f"--{name} (or {variable}): {exc}") from None

        config = cls(setting("host", str, DEFAULT_HOST), setting("port", _port, DEFAULT_PORT), setting("ttl", _ttl, DEFAULT_TTL),
                     setting("certfile", str, None), setting("keyfile", str, None))
        if bool(config.certfile) != bool(config.keyfile):
            raise ValueError("--certfile and --keyfile go together (or BILHETERIA_NS_CERTFILE and BILHETERIA_NS_KEYFILE)")
        return config


def _port(text: str) -> int:
    if not text.strip().lstrip("-").isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be 0..65535, got {value}")
    return value


def _ttl(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        config = NameServerConfig.parse(argv)
    except ValueError as exc:
        print(f"name_server.py: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        context = tls.server_context(config.certfile, config.keyfile) if config.certfile else None
    except tls.TLSConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        server = NameServer(config.host, config.port, config.ttl, tls_context=context)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.close())
    log.info("registrations live %.1f s without a heartbeat; %s", config.ttl, "TLS only" if context else "plain text")
    print(f"Name server listening on {server.host}:{server.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
