"""Circuit breaker: stop calling a server that keeps failing, and probe it again after a cool-down.

A client that keeps sending requests to a dead server wastes its time budget on timeouts that could
have gone to a healthy replica. The breaker remembers recent failures per server and turns further
calls into an immediate `CircuitOpenError` until a cool-down has passed; then it lets a few probes
through and closes again as soon as one of them succeeds.

Each state is a small class that owns the transitions it causes, so reading one class tells the
whole story of that state. The breaker owns what the states share: the lock, the clock and the
listeners. State methods only run with the lock held; listeners only run with it released, so a
listener may call back into the breaker.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger("bilheteria.client.breaker")

T = TypeVar("T")


class CircuitOpenError(Exception):
    """Raised instead of calling when the breaker does not admit the call; failover moves on to the next server."""


class BreakerListener:
    """Watches a breaker without reaching into it; the status line and the tour subscribe this way.

    Called after the breaker's lock is released, in the order the transitions happened, and possibly
    from a different thread than the call that caused them (whichever thread is delivering at the
    time). Exceptions it raises are logged and ignored.
    """

    def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        """Called once per transition, e.g. ("closed", "open")."""


class BreakerState(ABC):
    """One state of the breaker; subclasses decide admissions and their own way out.

    Every method runs with the breaker's lock held, which is why states can keep plain counters.
    """

    name: ClassVar[str]

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def refresh(self) -> None:  # noqa: B027 - a hook on purpose: only OpenState has a time-driven exit
        """Make transitions that are due because time passed; most states have none."""

    @abstractmethod
    def before_call(self) -> None:
        """Admit a call (reserving whatever it needs) or raise CircuitOpenError."""

    @abstractmethod
    def on_success(self) -> None:
        """A healthy answer arrived; transition if that is evidence this state should end."""

    @abstractmethod
    def on_failure(self) -> None:
        """A failure arrived; transition if that is evidence this state should end."""

    def on_abandon(self) -> None:  # noqa: B027 - a hook on purpose: only HalfOpenState reserves slots
        """A call admitted by this state ended with no verdict (e.g. KeyboardInterrupt); free its slot."""

    @abstractmethod
    def describe(self) -> str:
        """A few words for repr, so a log line shows why the breaker is where it is."""


class ClosedState(BreakerState):
    """Calls flow; failures in a row are counted until they say the server is down."""

    name = "closed"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._consecutive_failures = 0

    def before_call(self) -> None:
        pass

    def on_success(self) -> None:
        self._consecutive_failures = 0

    def on_failure(self) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= self._breaker._failure_threshold:
            self._breaker._switch(OpenState(self._breaker))

    def describe(self) -> str:
        return f"closed, {self._consecutive_failures}/{self._breaker._failure_threshold} failures in a row"


class OpenState(BreakerState):
    """Calls are refused without touching the server until the cool-down has passed."""

    name = "open"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._probe_at = breaker._clock() + breaker._reset_timeout

    def _wait(self) -> float:
        return max(0.0, self._probe_at - self._breaker._clock())

    def refresh(self) -> None:
        if self._wait() <= 0.0:
            self._breaker._switch(HalfOpenState(self._breaker))

    def before_call(self) -> None:
        raise CircuitOpenError(f"Circuit for {self._breaker.name} is open; next probe in {self._wait():.1f} s")

    def on_success(self) -> None:
        """A call admitted before the breaker opened came back; the cool-down still decides."""

    def on_failure(self) -> None:
        """Late failures of calls admitted before opening must not push the next probe back."""

    def describe(self) -> str:
        return f"open, next probe in {self._wait():.1f} s"


class HalfOpenState(BreakerState):
    """A few probes may go through; the first verdict decides whether the server is back."""

    name = "half-open"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._probes_in_flight = 0

    def before_call(self) -> None:
        limit = self._breaker._half_open_max_calls
        if self._probes_in_flight >= limit:
            raise CircuitOpenError(
                f"Circuit for {self._breaker.name} is half-open and all {limit} probe slot(s) are busy; "
                "try another server or retry in a moment"
            )
        self._probes_in_flight += 1

    def on_success(self) -> None:
        self._breaker._switch(ClosedState(self._breaker))

    def on_failure(self) -> None:
        self._breaker._switch(OpenState(self._breaker))

    def on_abandon(self) -> None:
        self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def describe(self) -> str:
        return f"half-open, {self._probes_in_flight}/{self._breaker._half_open_max_calls} probes in flight"


class CircuitBreaker:
    """Guards calls to one server; safe to share between any number of threads.

    `is_failure` decides what counts against the server (the client counts only its own `Failed`,
    never a refusal such as sold out). Time-driven transitions are lazy: nothing runs in the
    background, so the move from open to half-open happens the first time anyone looks after the
    cool-down (`state`, `call`). Reading `state` therefore reports the effective state, and that read
    is what fires the "open" -> "half-open" event to listeners. `repr` is the one view that never
    transitions, so a debugger cannot change what it inspects.

    Outcomes always go to the current state, whichever state admitted the call: a slow call admitted
    while closed that fails during half-open re-opens the breaker, which is what its evidence says.
    """

    def __init__(
        self,
        name: str,
        *,
        is_failure: Callable[[BaseException], bool],
        failure_threshold: int = 3,
        reset_timeout: float = 2.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be 0 or more seconds, got {reset_timeout}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be at least 1, got {half_open_max_calls}")
        self.name = name
        self._failure_threshold = failure_threshold
        self._reset_timeout = reset_timeout
        self._half_open_max_calls = half_open_max_calls
        self._is_failure = is_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: tuple[BreakerListener, ...] = ()
        # Transitions are queued under the lock in the order they happen and delivered by one thread at a
        # time, so listeners never see "open" -> "half-open" before the "closed" -> "open" that caused it.
        self._pending: deque[tuple[str, str]] = deque()
        self._delivering = False
        self._state: BreakerState = ClosedState(self)

    @property
    def state(self) -> str:
        """The effective state; may perform a due open -> half-open transition (see the class doc)."""
        with self._lock:
            name = self._current().name
        self._deliver_pending()
        return name

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` if admitted; its exceptions are classified, counted and re-raised unchanged.

        `fn` runs without the lock so slow servers do not serialise every caller. An exception that
        is neither a failure nor an `Exception` (KeyboardInterrupt, SystemExit) gives no verdict on
        the server: it only frees the probe slot the call held.
        """
        admitted_by = self._admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if self._is_failure(exc):
                self._record(failed=True)
            elif isinstance(exc, Exception):
                self._record(failed=False)
            else:
                self._abandon(admitted_by)
            raise
        self._record(failed=False)
        return result

    def add_listener(self, listener: BreakerListener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def __repr__(self) -> str:
        with self._lock:
            description = self._state.describe()
        return f"<CircuitBreaker {self.name!r}: {description}>"

    def _current(self) -> BreakerState:
        """The state after any time-driven transition; call with the lock held."""
        self._state.refresh()
        return self._state

    def _switch(self, new: BreakerState) -> None:
        """Install `new` and queue the event; states call this, always with the lock held."""
        old = self._state
        self._state = new
        if old.name != new.name:
            self._pending.append((old.name, new.name))

    def _admit(self) -> BreakerState:
        """Run before_call and return the state that admitted, so `call` can free the right slot."""
        try:
            with self._lock:
                state = self._current()
                state.before_call()
            return state
        finally:
            self._deliver_pending()

    def _record(self, *, failed: bool) -> None:
        """Hand a verdict on the server to the current state."""
        with self._lock:
            state = self._current()
            if failed:
                state.on_failure()
            else:
                state.on_success()
        self._deliver_pending()

    def _abandon(self, admitted_by: BreakerState) -> None:
        # A slot belongs to the state that granted it; a newer half-open state never granted this one.
        with self._lock:
            if admitted_by is self._state:
                admitted_by.on_abandon()

    def _deliver_pending(self) -> None:
        """Hand queued transitions to listeners, outside the lock; one thread delivers at a time.

        A thread that finds delivery already under way leaves its events to that thread, which keeps
        the order and lets a listener call back into the breaker without deadlocking.
        """
        with self._lock:
            if self._delivering or not self._pending:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        self._delivering = False
                        return
                    old, new = self._pending.popleft()
                    listeners = self._listeners
                for listener in listeners:
                    try:
                        listener.state_change(self, old, new)
                    except Exception:
                        logger.exception(
                            "Listener %r failed on %s -> %s of breaker %s; ignored", listener, old, new, self.name
                        )
        except BaseException:
            with self._lock:
                self._delivering = False
            raise
