"""RPyC's TCP registry protocol, the one wire that name servers, ticket servers and terminals all speak.

One brine-dumped ("RPYC", COMMAND, args) per fresh TCP (or TLS) connection, answered with one brine-dumped
result, then the connection is closed; stock `rpyc.utils.registry.TCPRegistryClient` speaks it too. The name
server decodes requests here (`decode_request`), the ticket servers register and the terminals discover
through `exchange`, and the three agree on the service's name and what an address looks like.

Registrations can be signed (`RegistrationKey`): REGISTER and UNREGISTER then carry one more argument, a proof
(timestamp, nonce, the host the request is sent from, and an HMAC-SHA256 over the command, its arguments and
those three under a key the servers and name servers share). The host is signed because the name server lists
the address a registration comes from: a captured proof replayed from another host, even to another name server,
lists nothing but the host that signed it. It is still one brine message per connection, so the exchange stays a valid
RPyC registry exchange; only a name server run in its explicit insecure mode accepts the stock, unsigned form.
QUERY and LIST are never signed: stock clients can always discover.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Self

from rpyc.core import brine

from net import tls

SERVICE_NAME = "TICKETS"
"""The name ticket servers register under and terminals ask for."""
MAX_NAME = 64
MAX_ALIASES = 16

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    """HOST:PORT as typed in a flag or an environment value; a ValueError that says what was wrong otherwise."""
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def listenable(host: str) -> str:
    """A host this machine can listen on, resolved now, so a typo in a flag stops a program at start-up with one
    line (a ValueError saying why) instead of later at bind."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"{host!r} is not an address to listen on ({getattr(exc, 'strerror', None) or exc})") from None
    return host


def show(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class BadRequest(ValueError):
    """The bytes can never become a valid request; the connection is dropped without an answer."""


_COMMANDS = ("QUERY", "REGISTER", "UNREGISTER", "LIST")
# Every valid request starts with one of these exact bytes, so garbage is recognised from its first byte.
_HEADERS = tuple(brine.TAG_TUP3 + brine.dump("RPYC") + brine.dump(command) for command in _COMMANDS)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME


def _is_port(value: object) -> bool:
    return type(value) is int and 0 < value <= 65535


KEY_ENV = "BILHETERIA_REGISTRATION_KEY"
"""The shared registration key itself, for deployments that hand secrets over in the environment."""
KEY_FILE_ENV = "BILHETERIA_REGISTRATION_KEY_FILE"
"""A file holding the key (its first line); wins over KEY_ENV. Never a flag value, which `ps` would show."""
MIN_KEY_CHARS = 32
"""The shortest key accepted: 32 characters of `secrets.token_hex` are 128 random bits, beyond guessing; a
shorter key is refused at start-up rather than used, because a guessable key is no authentication at all."""
PROOF_WINDOW_SECONDS = 30.0
"""How far a registration's timestamp may be from the name server's clock (either way). Wide enough for hosts
kept in step by NTP and a heartbeat stuck in a retry; narrow, so a captured proof is useless half a minute
later, and the name server remembers each accepted nonce only this long to refuse its replays."""
NONCE_BYTES = 16
MAC_BYTES = 32
MAX_HOST = 255
"""The longest host a proof may name (a DNS name's limit; the sender signs the numeric address it sends from)."""
_MAC_DOMAIN = "bilheteria-registration-v1"
"""Prefixed to what is signed, so a MAC made for this protocol is never valid for anything else."""


class RegistrationKeyError(ValueError):
    """A registration key that is missing, unreadable or too short; the message is the one line to show."""


class Proof(NamedTuple):
    """What makes a REGISTER or UNREGISTER authentic: when (Unix milliseconds), a nonce used once, the host it is
    sent from (as the sender's socket sees itself), and the MAC over the request and these."""

    timestamp_ms: int
    nonce: bytes
    host: str
    mac: bytes


def same_host(host: str) -> str:
    """A host as both ends compare it: an IPv4 address seen through a dual-stack IPv6 socket is the IPv4 address."""
    return host.lower().removeprefix("::ffff:")


@dataclass(frozen=True)
class RegistrationKey:
    """The secret shared by the ticket servers and the name servers. Its repr shows where it came from, never it."""

    secret: bytes = field(repr=False)
    source: str = "the environment"

    @classmethod
    def from_text(cls, text: str, source: str) -> Self:
        key = text.strip()
        if len(key) < MIN_KEY_CHARS:
            raise RegistrationKeyError(f"the registration key in {source} is {len(key)} characters; it needs at least "
                                       f"{MIN_KEY_CHARS} (make one with: python -c 'import secrets; print(secrets.token_hex(32))')")
        return cls(key.encode(), source)

    @classmethod
    def read(cls, path: str) -> Self:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistrationKeyError(f"the registration key file {path} cannot be read "
                                       f"({getattr(exc, 'strerror', None) or exc})") from None
        return cls.from_text(text, f"the file {path}")

    @classmethod
    def load(cls, path: str | None = None, environ: Mapping[str, str] | None = None) -> Self | None:
        """The key from `path` (a flag's value), else from $BILHETERIA_REGISTRATION_KEY_FILE, else from
        $BILHETERIA_REGISTRATION_KEY; None when none is given. An empty variable counts as unset."""
        environ = os.environ if environ is None else environ
        path = path or environ.get(KEY_FILE_ENV) or None
        if path:
            return cls.read(path)
        text = environ.get(KEY_ENV)
        return cls.from_text(text, f"${KEY_ENV}") if text else None

    def _mac(self, command: str, args: tuple, timestamp_ms: int, nonce: bytes, host: str) -> bytes:
        signed = brine.dump((_MAC_DOMAIN, command, args, timestamp_ms, nonce, host))
        return hmac.new(self.secret, signed, hashlib.sha256).digest()

    def sign(self, command: str, args: tuple, host: str, now: float | None = None) -> tuple:
        """The request ("RPYC", command, args + (proof,)) sent from `host`, with a fresh nonce and the time `now`
        (default: the wall clock)."""
        timestamp_ms = round((time.time() if now is None else now) * 1000)
        nonce, host = secrets.token_bytes(NONCE_BYTES), same_host(host)
        return "RPYC", command, (*args, tuple(Proof(timestamp_ms, nonce, host, self._mac(command, args, timestamp_ms, nonce, host))))

    def check(self, command: str, args: tuple, proof: Proof, peer: str, now: float) -> str | None:
        """None when `proof` is this key's MAC of the request, sent from `peer`, with a timestamp within the window of
        `now`; else why not (a few words). Replays within the window are the name server's to refuse (it remembers
        nonces)."""
        if not hmac.compare_digest(proof.mac, self._mac(command, args, proof.timestamp_ms, proof.nonce, proof.host)):
            return "bad signature"
        if proof.host != same_host(peer):
            return f"signed for host {proof.host}, sent from {peer} (a NAT between them?)"
        if abs(proof.timestamp_ms / 1000 - now) > PROOF_WINDOW_SECONDS:
            return "stale timestamp"
        return None


class Request(NamedTuple):
    """One decoded request: the command, its arguments (without the proof), and the proof when it was signed."""

    command: str
    args: tuple
    proof: Proof | None = None


def _proof(value: object) -> Proof | None:
    if type(value) is tuple and len(value) == 4:
        timestamp_ms, nonce, host, mac = value
        if type(timestamp_ms) is int and 0 < timestamp_ms < 2**63 and type(nonce) is bytes and len(nonce) == NONCE_BYTES \
                and type(host) is str and 0 < len(host) <= MAX_HOST and type(mac) is bytes and len(mac) == MAC_BYTES:
            return Proof(timestamp_ms, nonce, host, mac)
    return None


def decode_request(data: bytes) -> Request | None:
    """The request once `data` holds exactly one valid request; None while it may still become one.

    brine is not self-delimiting and silently short-reads, so half a request can load as a different, shorter
    value; a request counts as complete only when re-encoding it gives back exactly the bytes received.
    """
    if tls.looks_like_tls(data):
        raise BadRequest("a TLS handshake, but this name server speaks plain text (TLS needs --certfile and --keyfile)")
    if not any(data.startswith(h) or h.startswith(data) for h in _HEADERS):
        raise BadRequest("not an RPyC registry request")
    try:
        message = brine.load(data)
        encoded = brine.dump(message)
    except (TypeError, ValueError, struct.error, RecursionError):  # truncated so far: the deadline and cap bound the wait
        return None
    if encoded != data:
        if data.startswith(encoded):
            raise BadRequest("bytes after the request")
        return None
    _, command, args = message
    if command == "QUERY" and len(args) == 1 and _is_name(args[0]):
        return Request(command, (args[0].upper(),))
    if command in ("REGISTER", "UNREGISTER"):
        plain = 2 if command == "REGISTER" else 1
        proof = _proof(args[-1]) if len(args) == plain + 1 else None
        if len(args) == plain or proof is not None:
            args = args[:plain]
            if command == "UNREGISTER" and _is_port(args[0]):
                return Request(command, args, proof)
            if command == "REGISTER":
                aliases, port = args
                if type(aliases) is tuple and 0 < len(aliases) <= MAX_ALIASES and all(map(_is_name, aliases)) and _is_port(port):
                    return Request(command, args, proof)  # the aliases as sent: the proof signs them so
    if command == "LIST" and len(args) == 1 and type(args[0]) is tuple and len(args[0]) == 1:
        host = args[0][0]
        if host is None or (isinstance(host, str) and len(host) <= 255):
            return Request(command, (host or None,))  # like stock RPyC: an empty filter lists everything
    raise BadRequest(f"malformed {command} arguments")


MAX_REPLY_BYTES = 65536


def exchange(address: Address, request: tuple | Callable[[str], tuple], timeout: float,
             tls_context: ssl.SSLContext | None = None) -> object:
    """One request of the registry protocol as a client: connect (and handshake), send, read the answer until the
    name server closes, decode it; all within `timeout`. Anything late, short or malformed raises (`OSError` or
    `ValueError`), so a failure is never mistaken for an empty answer. A callable `request` is made once connected,
    from the host this side sends from (what a signed registration signs)."""
    deadline = time.monotonic() + timeout
    with tls.connect(address, timeout, tls_context) as sock:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.sendall(brine.dump(request(sock.getsockname()[0]) if callable(request) else request))
        reply = b""
        while len(reply) <= MAX_REPLY_BYTES:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if tls.looks_like_tls(reply):
        raise tls.plain_text_refused()
    if not reply:
        raise ValueError("closed without an answer")
    try:
        answer = brine.load(reply)
        complete = brine.dump(answer) == reply
    except Exception as exc:  # noqa: BLE001 - brine raises whatever its parser hits on bad bytes
        raise ValueError(f"garbled answer ({type(exc).__name__})") from None
    if not complete:
        raise ValueError("truncated or padded answer")
    return answer
