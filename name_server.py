"""Name server: where clients learn which ticket servers are alive right now.

It speaks RPyC's TCP registry protocol, so stock `rpyc.utils.registry.TCPRegistryClient` (and RPyC servers with
auto_register) work against it unchanged: one brine-dumped ("RPYC", COMMAND, args) per fresh TCP connection,
answered with one brine-dumped result, then the connection is closed.

What it adds over stock `rpyc_registry`: one single-threaded event loop over non-blocking sockets, so a client that
stays silent, sends half a request, sends garbage or sends a huge blob is cut off by a deadline, a size cap or a
validation error, and never delays anybody else's answer.

Registrations are soft state: an entry not refreshed within `ttl` seconds is gone, and nothing is persisted, because
servers re-register every couple of seconds; a restarted name server is complete again after one heartbeat.

Registrations (REGISTER, UNREGISTER) must be signed with the shared registration key (net.registry_protocol.
RegistrationKey): a proof with a timestamp within `PROOF_WINDOW_SECONDS` of this clock and a nonce never seen
before, so a rogue without the key can neither list itself nor unlist anyone, and a captured registration cannot
be played again. Refusals are answered, and logged as one line per `REFUSAL_LOG_SECONDS` with their counts.
QUERY and LIST stay open, so stock clients still discover. `--insecure-open-registration` is stock
`rpyc_registry`'s behaviour (anyone may register anything): for a lab, never for a box office that sells.

With a certificate and key it speaks only TLS, handshaking without blocking the loop (a client that stalls in
its handshake meets the same deadline as one that stalls in its request). The protocol itself (requests, `exchange`)
is in net/registry_protocol.py, shared with the ticket servers and the terminals; cutting a request out of the
byte stream (the size cap and the deadline) is in net/framing.py. This module imports only net/.

    python name_server.py (--registration-key-file FILE | --insecure-open-registration) [--host 127.0.0.1]
                          [--port 18811] [--ttl 6] [--certfile CERT --keyfile KEY]
    (or BILHETERIA_NS_HOST / _NS_PORT / _NS_TTL / _NS_CERTFILE / _NS_KEYFILE / _NS_INSECURE_OPEN_REGISTRATION=1, and
    BILHETERIA_REGISTRATION_KEY_FILE or BILHETERIA_REGISTRATION_KEY, shared with the ticket servers; flags win)
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
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Self, TypeVar

from rpyc.core import brine

from net import tls
from net.framing import RequestFrame
from net.registry_protocol import (
    KEY_ENV,
    KEY_FILE_ENV,
    PROOF_WINDOW_SECONDS,
    Address,
    BadRequest,
    RegistrationKey,
    RegistrationKeyError,
    Request,
    decode_request,
    listenable,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18811
DEFAULT_TTL = 6.0
REFUSAL_LOG_SECONDS = 10.0
"""Refused registrations are logged as one line per this interval, with counts: a flood of forgeries costs the log
a line every ten seconds, not a line per attempt, and an operator still learns of it within seconds."""
MAX_REMEMBERED_NONCES = 100_000
"""Nonces of accepted registrations kept to refuse their replays. Only a key holder can add one, and an honest
server adds one per heartbeat (2 s), so 100,000 covers over 6,000 servers within the 30 s window; beyond it
registrations are refused (and logged) rather than letting a replay through by forgetting."""

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


class RegistrationGuard:
    """Decides whether a REGISTER or UNREGISTER may change the registry: signed with the key, timely, and never
    seen before. Pure apart from the injectable wall clock (the proof's timestamp comes from another host's clock,
    so the monotonic clock cannot be compared with it)."""

    def __init__(self, key: RegistrationKey, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it can be forgotten, oldest first

    def refusal(self, request: Request, host: str) -> str | None:
        """None when the request, which came from `host`, may be applied (its nonce is then spent), else why not."""
        if request.proof is None:
            return "unsigned"
        now = self._clock()
        problem = self.key.check(request.command, request.args, request.proof, host, now)
        if problem:
            return problem
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if request.proof.nonce in self._seen:
            return "replayed"
        if len(self._seen) >= MAX_REMEMBERED_NONCES:
            return "too many registrations to remember"
        self._seen[request.proof.nonce] = max(now, request.proof.timestamp_ms / 1000) + PROOF_WINDOW_SECONDS
        return None


@dataclass
class RefusalTally:
    """Refused registrations since the last line, by reason and by peer host: the log's aggregate of a flood."""

    interval: float = REFUSAL_LOG_SECONDS
    reasons: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)

    def add(self, reason: str, host: str) -> None:
        self.reasons[reason] += 1
        self.hosts[host] += 1

    def flush(self, now: float, force: bool = False) -> None:
        """Log one WARNING line when the interval is over (or `force`) and anything was refused, then start again."""
        if not (force or now - self.since >= self.interval):
            return
        if self.reasons:
            total = sum(self.reasons.values())
            why = ", ".join(f"{count} {reason}" for reason, count in self.reasons.most_common())
            who = ", ".join(f"{host} ({count})" for host, count in self.hosts.most_common(5))
            more = f" and {len(self.hosts) - 5} more hosts" if len(self.hosts) > 5 else ""
            log.warning("refused %d registration%s in %.0f s (%s) from %s%s", total, "" if total == 1 else "s",
                        now - self.since, why, who, more)
        self.reasons.clear()
        self.hosts.clear()
        self.since = now


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer: Address
    frame: RequestFrame[Request]
    outbox: bytes = b""
    plain: bool = True
    """Not yet wrapped: a TLS name server first looks at the first byte, to tell a plain-text client apart."""
    handshaking: bool = False
    waiting_for: int = selectors.EVENT_READ


class NameServer:
    """The registry behind a single-threaded selectors loop. Binds in the constructor, so `.port` is known
    at once (port 0 picks a free one). With `tls_context` every connection must handshake first. With `key` only
    signed registrations are applied; without one, anyone's are (the program asks for that explicitly:
    `--insecure-open-registration`). Use `serve_forever()` + `close()`, or `with NameServer(port=0) as ns:` to
    serve from a background thread for the duration of the block.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, ttl: float = DEFAULT_TTL, *,
                 deadline: float = 2.0, max_request: int = 4096, max_connections: int = 1024,
                 tls_context: ssl.SSLContext | None = None, key: RegistrationKey | None = None) -> None:
        self.registry = Registry(ttl)
        self.guard = RegistrationGuard(key) if key is not None else None
        self.refused = RefusalTally()
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
                    self.refused.flush(now)
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
                conn.outbox = brine.dump(self._answer(request, host=conn.peer[0]))
                return True

    def _answer(self, request: Request, host: str) -> object:
        command, args, _ = request
        if command == "QUERY":
            return self.registry.query(args[0])
        if command in ("REGISTER", "UNREGISTER") and self.guard is not None:
            reason = self.guard.refusal(request, host)
            if reason is not None:
                self.refused.add(reason, host)
                return f"REFUSED: {reason}"
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
        self.refused.flush(time.monotonic(), force=True)
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
INSECURE_VARIABLE = "BILHETERIA_NS_INSECURE_OPEN_REGISTRATION"


@dataclass(frozen=True)
class NameServerConfig:
    """What one name server is started with: each setting from its flag, else BILHETERIA_NS_<NAME>, else the default."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    """0 picks a free port (the readiness line says which)."""
    ttl: float = DEFAULT_TTL
    certfile: str | None = None
    keyfile: str | None = None
    key: RegistrationKey | None = None
    """Only registrations signed with it are applied; None only with `insecure_open_registration`."""
    insecure_open_registration: bool = False

    @classmethod
    def parse(cls, argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> NameServerConfig:
        """The configuration of a command line and an environment; a ValueError whose message is the one line to show."""
        environ = os.environ if environ is None else environ
        parser = _Parser(description="Bilheteria name server (RPyC TCP registry protocol).")
        for name, what in _VALUES:
            parser.add_argument(f"--{name}", help=f"{what}; env BILHETERIA_NS_{name.upper()}")
        parser.add_argument("--registration-key-file", metavar="FILE",
                            help=f"the registration key shared with the ticket servers (its first line, at least 32 "
                                 f"characters); env {KEY_FILE_ENV}, or the key itself in {KEY_ENV}")
        parser.add_argument("--insecure-open-registration", action="store_true",
                            help="accept anyone's registrations, as stock rpyc_registry does: any host on the network can "
                                 f"list an impostor or unlist the real servers; env {INSECURE_VARIABLE}=1")
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

        host, port, ttl = setting("host", listenable, DEFAULT_HOST), setting("port", _port, DEFAULT_PORT), setting("ttl", _ttl, DEFAULT_TTL)
        certfile, keyfile = setting("certfile", str, None), setting("keyfile", str, None)
        if bool(certfile) != bool(keyfile):
            raise ValueError("--certfile and --keyfile go together (or BILHETERIA_NS_CERTFILE and BILHETERIA_NS_KEYFILE)")
        insecure = args.insecure_open_registration or environ.get(INSECURE_VARIABLE, "") not in ("", "0")
        try:
            key = RegistrationKey.load(args.registration_key_file, environ)
        except RegistrationKeyError as exc:
            raise ValueError(str(exc)) from None
        if key is None and not insecure:
            raise ValueError(f"registrations need the key shared with the ticket servers: --registration-key-file FILE, "
                             f"{KEY_FILE_ENV} or {KEY_ENV} (or --insecure-open-registration to accept anyone's)")
        if key is not None and insecure:
            raise ValueError(f"--insecure-open-registration (or {INSECURE_VARIABLE}) contradicts the registration key in {key.source}")
        return cls(host, port, ttl, certfile, keyfile, key, insecure)


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
        server = NameServer(config.host, config.port, config.ttl, tls_context=context, key=config.key)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.close())
    log.info("registrations live %.1f s without a heartbeat; %s; %s", config.ttl, "TLS only" if context else "plain text",
             f"registrations signed with the key in {config.key.source}" if config.key
             else "INSECURE: anyone may register or unregister (--insecure-open-registration)")
    print(f"Name server listening on {server.host}:{server.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
