"""The transport under the ticket service: RPyC's threaded server with bounded frames and optional TLS.

Everything here happens before a call reaches the service: accepting a connection, the TLS handshake (or the
alert that tells a plain-text client it reached a TLS server), and reading frames. Stock RPyC inflates a
compressed frame with no limit and logs two tracebacks per broken connection; here a frame is capped, and a
client that breaks the protocol costs its own connection and one log line.
"""

from __future__ import annotations

import logging
import socket
import ssl
import zlib
from typing import Any

import rpyc
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.utils.server import ThreadedServer

from net import tls

MAX_FRAME_BYTES = 32 * 1024 * 1024

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

log = logging.getLogger("bilheteria.service.transport")


class FrameTooLarge(ValueError):
    """A client sent, or would have us inflate, a message beyond MAX_FRAME_BYTES."""


class TLSClient(ValueError):
    """A TLS client reached this plain-text server."""


class BoundedChannel(Channel):
    """RPyC's framing with a ceiling: a frame may neither claim nor inflate to more than MAX_FRAME_BYTES.

    Stock RPyC inflates a compressed frame with no limit, so half a megabyte on the wire could make the
    server allocate gigabytes before any argument check runs.
    """

    __slots__ = ()

    def recv(self) -> bytes:
        header = self.stream.read(self.FRAME_HEADER.size)
        if tls.looks_like_tls(header):
            raise TLSClient("a TLS handshake, but this server speaks plain text (TLS needs --certfile and --keyfile)")
        length, compressed = self.FRAME_HEADER.unpack(header)
        if length > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"a frame of {length} bytes")
        data = self.stream.read(length + len(self.FLUSHER))[: -len(self.FLUSHER)]
        if not compressed:
            return data
        inflater = zlib.decompressobj()
        data = inflater.decompress(data, MAX_FRAME_BYTES)
        if inflater.unconsumed_tail:
            raise FrameTooLarge(f"a compressed frame inflating past {MAX_FRAME_BYTES} bytes")
        return data


class TicketServer(ThreadedServer):
    """RPyC's threaded server with bounded frames, optional TLS, and one log line (not two tracebacks) per
    broken connection. The TLS handshake runs on the connection's own thread, bounded by a deadline, so a slow
    or silent client never holds up the accept loop."""

    tls_context: ssl.SSLContext | None = None

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
        channel = BoundedChannel(SocketStream(sock))
        connection = self.service._connect(channel, config)
        try:
            while not connection.closed:
                connection.serve(None)
        except EOFError:
            pass
        except Exception as exc:  # noqa: BLE001 - whatever a client sent, it costs its own connection and one line
            channel.close()
            log.warning("dropped connection from %s:%s: %s: %s", peer[0], peer[1], type(exc).__name__, exc)
        finally:
            connection.close()


def peer(connection: rpyc.Connection) -> str:
    """HOST:PORT of the client at the other end of a connection, for the log; "?" when RPyC does not say."""
    try:
        host, port = connection._config["endpoints"][1][:2]
    except (KeyError, TypeError, ValueError, IndexError):
        return "?"
    return f"{host}:{port}"
