"""TLS on every hop: the contexts, the client's handshake, and how a mismatch is recognised and explained.

A ticket server or name server started with a certificate and key speaks only TLS; a terminal (or a server, for
its name-server connections) given a CA file speaks TLS and trusts only certificates signed by that CA, for the
host it dialled. Clients are not authenticated by certificate: the admin operations carry the admin token.

When the two ends disagree (one speaks TLS, the other plain text), retrying cannot help, so each side says so at
once instead of letting the other wait out a deadline: a TLS server answers a plain-text client with a TLS
protocol_version alert, which no plain-text answer can start with (`looks_like_tls`), and a TLS client that meets
a plain-text server sees the connection closed in the middle of its handshake. Either way the client raises
`TLSRefused`, an `OSError`, so every caller that handles a broken connection handles it too.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

HANDSHAKE_SECONDS = 5.0
"""How long a server waits for a client's TLS handshake before dropping it."""

PROTOCOL_VERSION_ALERT = b"\x15\x03\x01\x00\x02\x02\x46"
"""A fatal TLS alert record (protocol_version): the one thing a TLS server says to a plain-text client."""

_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and the reason."""


class TLSRefused(OSError):
    """A connection that cannot work with these settings (untrusted certificate, TLS against plain text):
    retrying the same peer is pointless, so callers may give up at once."""


@dataclass(frozen=True)
class TLSFiles:
    """Where a local cluster's PEM files are: every server gets the certificate and key, every client the CA."""

    certfile: str
    keyfile: str
    cafile: str

    def server_args(self) -> list[str]:
        return ["--certfile", self.certfile, "--keyfile", self.keyfile, "--cafile", self.cafile]

    def name_server_args(self) -> list[str]:
        return ["--certfile", self.certfile, "--keyfile", self.keyfile]


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """What a listening side presents: its certificate chain; TLS 1.2 at least; no client certificate asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except OSError as exc:
        reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        problem = "are not a matching PEM certificate and key" if isinstance(exc, ssl.SSLError) else "cannot be read"
        raise TLSConfigError(f"TLS certificate {certfile} and key {keyfile} {problem} ({reason or exc})") from None
    return context


def client_context(cafile: str) -> ssl.SSLContext:
    """What a dialling side checks: a certificate signed by `cafile`, valid for the host dialled (CERT_REQUIRED)."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:
        reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        raise TLSConfigError(f"CA file {cafile} cannot be used ({reason or exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def optional_client_context(cafile: str | None) -> ssl.SSLContext | None:
    return client_context(cafile) if cafile else None


def looks_like_tls(data: bytes) -> bool:
    """True for the start of a TLS record (an alert or a handshake); no brine or RPyC message starts this way."""
    return len(data) >= 2 and data[0] in _TLS_RECORD_TYPES and data[1] == 0x03


def starts_handshake(data: bytes) -> bool:
    """True when the first byte a client sent opens a TLS handshake record."""
    return data[:1] == b"\x16"


def connect(address: tuple[str, int], timeout: float, context: ssl.SSLContext | None) -> socket.socket:
    """A connected socket, with its TLS handshake done when `context` is given; the whole within `timeout`.

    The certificate must name the host as dialled (an IP address is checked against the IP entries of its SAN).
    """
    deadline = time.monotonic() + timeout
    sock = socket.create_connection(address, timeout=max(0.01, timeout))
    if context is None:
        return sock
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return context.wrap_socket(sock, server_hostname=address[0])
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise TLSRefused(f"its certificate was not trusted ({exc.verify_message}); pass the CA that signed it with --cafile") from None
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
        sock.close()
        raise TLSRefused("it closed the connection during the TLS handshake (a plain-text server? TLS needs its --certfile)") from None
    except ssl.SSLError as exc:
        sock.close()
        raise TLSRefused(f"the TLS handshake failed ({exc.reason or exc})") from None
    except BaseException:
        sock.close()
        raise


def plain_text_refused() -> TLSRefused:
    """What a plain-text client concludes on reading a TLS record where it expected an answer."""
    return TLSRefused("it speaks TLS and this side does not; pass the CA that signed its certificate with --cafile")


def refuse_plain_text(sock: socket.socket, linger: float = 1.0) -> None:
    """Tell a plain-text client on a blocking `sock` that this side speaks TLS, then let it hang up first.

    What the client sent is read before the alert and after it until the client closes (at most `linger`
    seconds), because closing with unread data would reset the connection and could discard the alert.
    """
    deadline = time.monotonic() + linger
    try:
        sock.settimeout(0.0)
        _drain(sock)
        sock.settimeout(linger)
        sock.sendall(PROTOCOL_VERSION_ALERT)
        sock.shutdown(socket.SHUT_WR)
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(4096):
                return
    except OSError:
        return


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            continue
    except (BlockingIOError, InterruptedError):
        return
