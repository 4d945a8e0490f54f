"""RPyC's TCP registry protocol, the one wire that name servers, ticket servers and terminals all speak.

One brine-dumped ("RPYC", COMMAND, args) per fresh TCP (or TLS) connection, answered with one brine-dumped
result, then the connection is closed; stock `rpyc.utils.registry.TCPRegistryClient` speaks it too. The name
server decodes requests here (`decode_request`), the ticket servers register and the terminals discover
through `exchange`, and the three agree on the service's name and what an address looks like.
"""

from __future__ import annotations

import ssl
import struct
import time

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


def decode_request(data: bytes) -> tuple[str, tuple] | None:
    """(COMMAND, args) once `data` holds exactly one valid request; None while it may still become one.

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
        return command, (args[0].upper(),)
    if command == "REGISTER" and len(args) == 2:
        aliases, port = args
        if type(aliases) is tuple and 0 < len(aliases) <= MAX_ALIASES and all(map(_is_name, aliases)) and _is_port(port):
            return command, (tuple(a.upper() for a in aliases), port)
    if command == "UNREGISTER" and len(args) == 1 and _is_port(args[0]):
        return command, args
    if command == "LIST" and len(args) == 1 and type(args[0]) is tuple and len(args[0]) == 1:
        host = args[0][0]
        if host is None or (isinstance(host, str) and len(host) <= 255):
            return command, (host or None,)  # like stock RPyC: an empty filter lists everything
    raise BadRequest(f"malformed {command} arguments")


MAX_REPLY_BYTES = 65536


def exchange(address: Address, request: tuple, timeout: float, tls_context: ssl.SSLContext | None = None) -> object:
    """One request of the registry protocol as a client: connect (and handshake), send, read the answer until the
    name server closes, decode it; all within `timeout`. Anything late, short or malformed raises (`OSError` or
    `ValueError`), so a failure is never mistaken for an empty answer."""
    deadline = time.monotonic() + timeout
    with tls.connect(address, timeout, tls_context) as sock:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.sendall(brine.dump(request))
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
