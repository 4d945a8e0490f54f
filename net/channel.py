"""The bounded channel: RPyC's framing with a ceiling on what one frame may cost, for both ends of a call.

Stock RPyC trusts the other side twice over: it inflates a compressed frame without limit (1.5 MB on the
wire became 4.7 GB in a terminal), and brine decodes whatever the bytes describe (a 46 KB frame of 1-tuples,
under any inflation cap, became 1.3 GB of objects in a server). Here a frame is bounded three ways before
brine sees it: its bytes (claimed and inflated), the number of objects it would decode into, and how deeply
they nest. The objects are counted by one linear scan of brine's tag stream that stops at the first excess,
so refusing a hostile frame costs at most the cap in steps, never the decoding. A refused frame closes the
channel and raises `FrameRefused`, an EOFError, so every caller that handles a lost connection handles it.

The ticket server reads requests (small: a call's arguments) and the terminal reads replies (large: a list
of reservations), so each side passes its own `Limits`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from rpyc.core import brine
from rpyc.core.channel import Channel

from net.tls import looks_like_tls


class FrameRefused(EOFError):
    """The peer sent a frame beyond this side's limits; the channel is closed, as a lost connection would be."""


@dataclass(frozen=True)
class Limits:
    """What one frame may cost the side that reads it."""

    frame_bytes: int
    """The most bytes a frame may claim, or inflate to."""
    objects: int
    """The most objects (every tuple, string and number counts one) a frame may decode into."""
    depth: int
    """The deepest nesting of tuples a frame may hold (brine decodes recursively)."""


_FIXED = {brine.TAG_NONE: 0, brine.TAG_EMPTY_STR: 0, brine.TAG_EMPTY_TUPLE: 0, brine.TAG_TRUE: 0, brine.TAG_FALSE: 0,
          brine.TAG_NOT_IMPLEMENTED: 0, brine.TAG_ELLIPSIS: 0, brine.TAG_FLOAT: 8, brine.TAG_COMPLEX: 16,
          brine.TAG_STR1: 1, brine.TAG_STR2: 2, brine.TAG_STR3: 3, brine.TAG_STR4: 4}
_FIXED.update(dict.fromkeys(brine.IMM_INTS.values(), 0))
FIXED_SIZE = {tag[0]: size for tag, size in _FIXED.items()}
"""Tags followed by a payload of known size (none for the singletons and the small integers)."""
SIZED_1 = {brine.TAG_STR_L1[0], brine.TAG_INT_L1[0]}
SIZED_4 = {brine.TAG_STR_L4[0], brine.TAG_INT_L4[0]}
"""Tags followed by a length (one byte, or four) and that many bytes."""
CONTAINERS = {brine.TAG_TUP1[0]: 1, brine.TAG_TUP2[0]: 2, brine.TAG_TUP3[0]: 3, brine.TAG_TUP4[0]: 4,
              brine.TAG_UNICODE[0]: 1, brine.TAG_SLICE[0]: 1, brine.TAG_FSET[0]: 1}
"""Tags followed by a fixed number of objects (a text wraps its bytes, a slice and a frozenset a tuple)."""
COUNTED_1, COUNTED_4 = brine.TAG_TUP_L1[0], brine.TAG_TUP_L4[0]
"""Tuples whose item count follows in one byte, or four."""


MESSAGE_KIND_BYTES = 1
"""An RPyC frame is one byte saying which kind of message it is, then one brine value (RPyC's `_send`)."""


def census(data: bytes, limits: Limits, start: int = MESSAGE_KIND_BYTES) -> tuple[int, int]:
    """(objects, depth) of the brine value at `start` in `data`, or `FrameRefused` at the first step beyond `limits`.

    Walks the tags without building anything: a stack holds how many items each open tuple still expects."""
    expected = [1]
    objects = deepest = 0
    position = start
    size = len(data)
    while expected:
        if expected[-1] == 0:
            expected.pop()
            continue
        expected[-1] -= 1
        if position >= size:
            raise FrameRefused("a frame that ends in the middle of a value")
        tag = data[position]
        position += 1
        objects += 1
        if objects > limits.objects:
            raise FrameRefused(f"a frame of more than {limits.objects} objects")
        if tag in FIXED_SIZE:
            position += FIXED_SIZE[tag]
        elif tag in SIZED_1:
            position += 1 + (data[position] if position < size else 0)
        elif tag in SIZED_4:
            position += 4 + int.from_bytes(data[position:position + 4], "big")
        else:
            if tag in CONTAINERS:
                items = CONTAINERS[tag]
            elif tag == COUNTED_1:
                items, position = (data[position] if position < size else 0), position + 1
            elif tag == COUNTED_4:
                items, position = int.from_bytes(data[position:position + 4], "big"), position + 4
            else:
                raise FrameRefused(f"a frame with an unknown brine tag {tag:#04x}")
            expected.append(items)
            deepest = max(deepest, len(expected) - 1)
            if deepest > limits.depth:
                raise FrameRefused(f"a frame nested more than {limits.depth} deep")
    return objects, deepest


class BoundedChannel(Channel):
    """RPyC's channel reading frames within `limits`; each side subclasses it to set its limits and to say what
    a TLS record where a frame should start means to it (`tls_met`)."""

    __slots__ = ()
    limits: Limits

    def tls_met(self) -> Exception:
        """The exception for a TLS record read where a plain-text frame should start."""
        raise NotImplementedError

    def recv(self) -> bytes:
        header = self.stream.read(self.FRAME_HEADER.size)
        if looks_like_tls(header):
            raise self.tls_met()
        length, compressed = self.FRAME_HEADER.unpack(header)
        if length > self.limits.frame_bytes:
            self.refuse(f"a frame of {length} bytes (at most {self.limits.frame_bytes})")
        data = self.stream.read(length + len(self.FLUSHER))[: -len(self.FLUSHER)]
        if compressed:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, self.limits.frame_bytes)
            except zlib.error as exc:
                self.refuse(f"a compressed frame that does not inflate ({exc})")
            if inflater.unconsumed_tail:
                self.refuse(f"a compressed frame inflating past {self.limits.frame_bytes} bytes")
        try:
            census(data, self.limits)
        except FrameRefused as exc:
            self.refuse(str(exc))
        return data

    def refuse(self, reason: str) -> None:
        """Close the channel (so nobody waits on it for a goodbye) and raise `FrameRefused`."""
        self.close()
        raise FrameRefused(reason)
