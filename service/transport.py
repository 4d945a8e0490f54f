"""The transport under the ticket service: RPyC's threaded server with bounded frames and optional TLS.

Everything here happens before a call reaches the service: accepting a connection, the TLS handshake (or the
alert that tells a plain-text client it reached a TLS server), and reading frames. Stock RPyC inflates a
compressed frame with no limit and logs two tracebacks per broken connection; here a frame is capped, and a
client that breaks the protocol costs its own connection and one log line.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
from typing import Any

import rpyc
from rpyc.core.stream import SocketStream
from rpyc.utils.server import ThreadedServer

from net import tls
from net.channel import BoundedChannel, FrameRefused, Limits
from service.admission import Admission

REQUEST_LIMITS = Limits(frame_bytes=1024 * 1024, objects=4096, depth=16)
"""What one frame a client sends may cost this server. The largest honest request (an event of 50 seated sectors
with the longest names the store takes) is 6.3 KB, 329 objects, 9 deep (tests/test_exhaustion.py measures it);
the most wire.py lets through is about 200 KB (50 sectors of 1,000 four-byte characters). So a megabyte, about
twelve times the objects and a few levels more: a client can cost one connection thread a few megabytes, never
the gigabytes brine would build from a frame of tuples."""

PROTOCOL_CONFIG = {
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "include_local_traceback": False,
    "include_local_version": False,
    "sync_request_timeout": 5,
    "log_exceptions": False,
}
"""Only `exposed_` names are reachable, nothing is pickled, no traceback leaves the process."""

DEFAULT_IDLE_SECONDS = 60.0
"""A connection that sends nothing (no call, no answer to a callback) for this long is closed, so idle sockets
cannot hold the connection cap. Far above the terminal's callback-line keepalive (2 s); a terminal whose pool
connection was closed while it sat idle dials again on its next call through the ordinary failover."""
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() failing for want of a resource: it will pass, so the listener is kept."""
TRANSIENT_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO})
"""accept() failing because of one client (it left before being accepted): try the next one at once."""

log = logging.getLogger("bilheteria.service.transport")


class TLSClient(ValueError):
    """A TLS client reached this plain-text server."""


class RequestChannel(BoundedChannel):
    """The server's side of the bounded channel: what a client's request may cost (REQUEST_LIMITS)."""

    __slots__ = ()
    limits = REQUEST_LIMITS

    def tls_met(self) -> Exception:
        return TLSClient("a TLS handshake, but this server speaks plain text (TLS needs --certfile and --keyfile)")


class TicketServer(ThreadedServer):
    """RPyC's threaded server with bounded frames, optional TLS, and one log line (not two tracebacks) per
    broken connection. The TLS handshake runs on the connection's own thread, bounded by a deadline, so a slow
    or silent client never holds up the accept loop.

    The accept loop outlives a shortage: stock RPyC closes its listener for good when `accept()` fails with
    EMFILE; here the loop waits and tries again (`Admission.failed`), refuses beyond the connection cap, and
    a connection that sends nothing for `idle_seconds` is closed, so idle sockets cannot hold the cap."""

    def __init__(self, *args: Any, admission: Admission, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 tls_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission = admission
        self.idle_seconds = idle_seconds
        self.tls_context = tls_context
        self.closing = threading.Event()
        """Set by `close`: cuts short a wait after a shortage."""

    def accept(self) -> None:
        """Accept one client and start its thread; a shortage of descriptors or threads is waited out."""
        while self.active:
            try:
                sock, address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self.active:
                    raise EOFError from None
                if exc.errno in TRANSIENT_ERRNOS:
                    continue
                if exc.errno not in SHORTAGE_ERRNOS:
                    raise EOFError from None  # the listener itself is gone
                self.closing.wait(self.admission.failed(f"accept() failed: {exc.strerror}"))
                continue
            break
        else:
            return
        if not self.admission.admit(address[0]):
            _close_quietly(sock)  # at once: the client sees a closed connection and fails over without waiting
            return
        sock.setblocking(True)
        self.clients.add(sock)
        try:
            threading.Thread(target=self._admitted, args=(sock,), daemon=True).start()
        except RuntimeError as exc:  # "can't start new thread"
            self.clients.discard(sock)
            self.admission.leave()
            _close_quietly(sock)
            self.closing.wait(self.admission.failed(f"no thread for a connection ({exc})"))
            return
        self.admission.accepted()

    def _admitted(self, sock: socket.socket) -> None:
        try:
            self._authenticate_and_serve_client(sock)
        finally:
            self.admission.leave()

    def close(self) -> None:
        self.closing.set()
        super().close()

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        """Serve until the peer leaves; a peer that breaks the protocol is cut off at once, without the polite
        goodbye (RPyC's close waits for the peer's answer, which a broken peer never sends)."""
        peer = sock.getpeername()
        if self.tls_context is None:
            return self._serve_connection(sock, peer, credentials)
        secured = self._handshake(sock, peer)
        if secured is None:
            return None
        self.clients.add(secured)  # so that close() reaches it: `sock` itself was detached by the wrapping
        try:
            return self._serve_connection(secured, peer, credentials)
        finally:
            self.clients.discard(secured)

    def _handshake(self, sock: socket.socket, peer: tuple) -> ssl.SSLSocket | None:
        """The TLS socket, or None after one log line: a plain-text client is told with a TLS alert."""
        assert self.tls_context is not None
        sock.settimeout(tls.HANDSHAKE_SECONDS)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if not tls.starts_handshake(first):
                log.warning("refused %s:%s: a plain-text client, but this server speaks TLS", peer[0], peer[1])
                tls.refuse_plain_text(sock)
                return None
            secured = self.tls_context.wrap_socket(sock, server_side=True)
        except OSError as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc) or type(exc).__name__)
            log.warning("refused %s:%s: TLS handshake failed (%s)", peer[0], peer[1], reason)
            return None
        secured.settimeout(None)
        return secured

    def _serve_connection(self, sock: socket.socket, peer: tuple, credentials: Any) -> None:
        config = dict(self.protocol_config, credentials=credentials, endpoints=(sock.getsockname(), peer), logger=self.logger)
        channel = RequestChannel(SocketStream(sock))
        connection = self.service._connect(channel, config)
        try:
            while not connection.closed:
                if not connection.serve(self.idle_seconds):
                    channel.close()  # no goodbye: an idle client may never answer one
                    self.admission.floods.note(f"closed connections idle for {self.idle_seconds:.0f} s", peer[0])
                    break
        except FrameRefused as exc:
            log.warning("dropped connection from %s:%s: %s", peer[0], peer[1], exc)
        except EOFError:
            pass
        except Exception as exc:  # noqa: BLE001 - whatever a client sent, it costs its own connection and one line
            channel.close()
            log.warning("dropped connection from %s:%s: %s: %s", peer[0], peer[1], type(exc).__name__, exc)
        finally:
            connection.close()


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def peer(connection: rpyc.Connection) -> str:
    """HOST:PORT of the client at the other end of a connection, for the log; "?" when RPyC does not say."""
    try:
        host, port = connection._config["endpoints"][1][:2]
    except (KeyError, TypeError, ValueError, IndexError):
        return "?"
    return f"{host}:{port}"
