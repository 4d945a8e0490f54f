"""Cutting one request out of a byte stream: a size cap and a deadline, so no client can hold a reader.

The registry protocol has no length prefix (brine is not self-delimiting), so a reader cannot know how much
is coming; it can only keep what arrived, ask after each chunk whether it is a whole request yet, and give
up at once on bytes that can never become one, on more bytes than any request needs, and at a deadline
counted from the connection's opening. The name server keeps one `RequestFrame` per connection; nothing here
touches a socket or reads the clock, so the rules are tested with bytes and numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from net.registry_protocol import BadRequest

R = TypeVar("R")


@dataclass(eq=False)
class RequestFrame(Generic[R]):
    """The bytes of one request so far. `decode` answers the request once the bytes hold exactly one, None while
    more may complete it, and raises `BadRequest` when they never will."""

    decode: Callable[[bytes], R | None]
    max_bytes: int
    opened: float
    """When the connection opened (the caller's clock): the deadline counts from here, not from the last byte."""
    deadline: float
    _data: bytearray = field(default_factory=bytearray)

    def room(self) -> int:
        """How much to read next: one byte past the cap, so an oversized request is seen as one."""
        return self.max_bytes + 1 - len(self._data)

    def feed(self, chunk: bytes) -> R | None:
        """Add what arrived; the request once complete, else None. `BadRequest` when it is too big or garbage."""
        self._data += chunk
        if len(self._data) > self.max_bytes:
            raise BadRequest(f"request larger than {self.max_bytes} bytes")
        return self.decode(bytes(self._data))

    @property
    def due(self) -> float:
        """When the reader gives up on this request, complete or not."""
        return self.opened + self.deadline

    def expired(self, now: float) -> bool:
        return now >= self.due
