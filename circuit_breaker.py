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
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitOpenError(Exception):
    """Raised instead of calling when the breaker does not admit the call.

    Failover code catches it to move on to the next server at once; `retry_after` tells it whether
    waiting for this one is worth anything.
    """

    def __init__(self, breaker_name: str, retry_after: float, message: str | None = None) -> None:
        if message is None:
            message = f"Circuit for {breaker_name} is open; next probe in {retry_after:.1f} s"
        super().__init__(message)
        self.breaker_name = breaker_name
        self.retry_after = retry_after


class BreakerListener:
    """Watches a breaker without reaching into it; the status line and metrics subscribe this way.

    Methods are called after the breaker's lock is released, in the order the events happened, and
    possibly from a different thread than the call that caused them (whichever thread is delivering
    at the time). Exceptions they raise are logged and ignored.
    """

    def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        """Called once per transition, e.g. ("closed", "open")."""

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        """Called for every outcome counted as a failure."""

    def success(self, breaker: CircuitBreaker) -> None:
        """Called for every outcome counted as healthy, including domain refusals like sold out."""


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Count only errors that say the server or the network is unwell.

    OSError covers refused and reset connections and timeouts (socket timeouts and RPyC's
    AsyncResultTimeout are both the builtin TimeoutError); EOFError is how RPyC reports a connection
    that closed mid-request. Anything else, such as a sold-out refusal, came from a server that was
    healthy enough to answer, and tripping on it would send customers away from a working box office.
    """
    return isinstance(exc, (OSError, EOFError))


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
    def allows_call(self) -> bool:
        """Whether before_call would admit now; must not reserve anything."""

    @abstractmethod
    def retry_after(self) -> float:
        """Seconds until this state would admit a call, as far as the clock alone can tell."""

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
    """Calls flow; failures are counted until they say the server is down."""

    name = "closed"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._consecutive_failures = 0
        # Outcomes (True = failure) for the failure-rate rule; unused when that rule is off.
        self._window: deque[bool] = deque(maxlen=breaker._window_size)
        self._window_failures = 0

    def allows_call(self) -> bool:
        return True

    def retry_after(self) -> float:
        return 0.0

    def before_call(self) -> None:
        pass

    def on_success(self) -> None:
        self._consecutive_failures = 0
        self._remember(failed=False)

    def on_failure(self) -> None:
        self._consecutive_failures += 1
        self._remember(failed=True)
        # Only a failure can trip the breaker: a success never makes the server look worse.
        if self._too_many_in_a_row() or self._failure_rate_too_high():
            self._breaker._switch(OpenState(self._breaker))

    def _remember(self, *, failed: bool) -> None:
        if self._breaker._failure_rate_threshold is None:
            return
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._window_failures -= 1
        self._window.append(failed)
        self._window_failures += int(failed)

    def _too_many_in_a_row(self) -> bool:
        return self._consecutive_failures >= self._breaker._failure_threshold

    def _failure_rate_too_high(self) -> bool:
        threshold = self._breaker._failure_rate_threshold
        if threshold is None or len(self._window) < self._breaker._min_calls_in_window:
            return False
        return self._window_failures / len(self._window) >= threshold

    def describe(self) -> str:
        text = f"closed, {self._consecutive_failures}/{self._breaker._failure_threshold} failures in a row"
        if self._breaker._failure_rate_threshold is not None:
            text += f", {self._window_failures}/{len(self._window)} failed in window"
        return text


class OpenState(BreakerState):
    """Calls are refused without touching the server until the cool-down has passed."""

    name = "open"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._probe_at = breaker._clock() + breaker._reset_timeout

    def refresh(self) -> None:
        if self.retry_after() <= 0.0:
            self._breaker._switch(HalfOpenState(self._breaker))

    def allows_call(self) -> bool:
        return False

    def retry_after(self) -> float:
        return max(0.0, self._probe_at - self._breaker._clock())

    def before_call(self) -> None:
        raise CircuitOpenError(self._breaker.name, self.retry_after())

    def on_success(self) -> None:
        """A call admitted before the breaker opened came back; the cool-down still decides."""

    def on_failure(self) -> None:
        """Late failures of calls admitted before opening must not push the next probe back."""

    def describe(self) -> str:
        return f"open, next probe in {self.retry_after():.1f} s"


class HalfOpenState(BreakerState):
    """A few probes may go through; the first verdict decides whether the server is back."""

    name = "half-open"

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__(breaker)
        self._probes_in_flight = 0

    def allows_call(self) -> bool:
        return self._probes_in_flight < self._breaker._half_open_max_calls

    def retry_after(self) -> float:
        # When every slot is taken the wait depends on a probe finishing, which nobody can predict.
        return 0.0

    def before_call(self) -> None:
        if not self.allows_call():
            limit = self._breaker._half_open_max_calls
            raise CircuitOpenError(
                self._breaker.name,
                0.0,
                f"Circuit for {self._breaker.name} is half-open and all {limit} probe slot(s) are busy; "
                "try another server or retry in a moment",
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

    Time-driven transitions are lazy: nothing runs in the background, so the move from open to
    half-open happens the first time anyone looks after the cool-down (`state`, `retry_after`,
    `allows_call`, `admit`, `call`). Reading `state` therefore reports the effective state, and that
    read is what fires the "open" -> "half-open" event to listeners. `repr` is the one view that never
    transitions, so a debugger cannot change what it inspects.

    Outcomes always go to the current state, whichever state admitted the call: a slow call admitted
    while closed that fails during half-open re-opens the breaker, which is what its evidence says.
    """

    CLOSED = ClosedState.name
    OPEN = OpenState.name
    HALF_OPEN = HalfOpenState.name

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout: float = 2.0,
        half_open_max_calls: int = 1,
        failure_rate_threshold: float | None = None,
        window_size: int = 20,
        min_calls_in_window: int = 10,
        is_failure: Callable[[BaseException], bool] = is_infrastructure_failure,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be 0 or more seconds, got {reset_timeout}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be at least 1, got {half_open_max_calls}")
        if failure_rate_threshold is not None and not 0.0 < failure_rate_threshold <= 1.0:
            raise ValueError(
                f"failure_rate_threshold must be in (0, 1] or None to disable it, got {failure_rate_threshold}"
            )
        if window_size < 1:
            raise ValueError(f"window_size must be at least 1, got {window_size}")
        if not 1 <= min_calls_in_window <= window_size:
            raise ValueError(
                f"min_calls_in_window must be between 1 and window_size ({window_size}), "
                f"got {min_calls_in_window}; a larger value would never let the failure rate trip"
            )
        self.name = name
        self._failure_threshold = failure_threshold
        self._reset_timeout = reset_timeout
        self._half_open_max_calls = half_open_max_calls
        self._failure_rate_threshold = failure_rate_threshold
        self._window_size = window_size
        self._min_calls_in_window = min_calls_in_window
        self._is_failure = is_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: tuple[BreakerListener, ...] = tuple(listeners)
        # Events are queued under the lock in the order they happen and delivered by one thread at a
        # time, so listeners never see "open" -> "half-open" before the "closed" -> "open" that caused it.
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._delivering = False
        self._state: BreakerState = ClosedState(self)

    @property
    def state(self) -> str:
        """The effective state; may perform a due open -> half-open transition (see the class doc)."""
        with self._lock:
            name = self._current().name
        self._deliver_pending()
        return name

    def retry_after(self) -> float:
        """Seconds until a probe would be admitted; 0.0 when calls are admitted now, and also when
        half-open slots are all busy, because that wait ends whenever a probe answers."""
        with self._lock:
            seconds = self._current().retry_after()
        self._deliver_pending()
        return seconds

    def allows_call(self) -> bool:
        """Whether `admit` would succeed right now; reserves nothing, so another thread may win the slot."""
        with self._lock:
            allowed = self._current().allows_call()
        self._deliver_pending()
        return allowed

    def admit(self) -> None:
        """Reserve the right to make one call, for callers that cannot hand `call` a function.

        Must be followed by exactly one `record_success` or `record_failure`: in half-open the slot
        stays taken until then, and no other probe gets through.
        """
        self._admit()

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
                self.record_failure(exc)
            elif isinstance(exc, Exception):
                self.record_success()
            else:
                self._abandon(admitted_by)
            raise
        self.record_success()
        return result

    def record_success(self) -> None:
        """Report a healthy answer, including a domain refusal such as sold out."""
        with self._lock:
            self._pending.append(("success", ()))
            self._current().on_success()
        self._deliver_pending()

    def record_failure(self, exc: BaseException) -> None:
        """Report a failure; counted as given, so classify first (e.g. with `is_infrastructure_failure`)
        when `exc` might be a domain refusal."""
        with self._lock:
            # Queued before the transition it may cause, so listeners read "failed, then opened".
            self._pending.append(("failure", (exc,)))
            self._current().on_failure()
        self._deliver_pending()

    def add_listener(self, listener: BreakerListener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def reset(self) -> None:
        """Force closed with clean counters, e.g. after an operator fixed the server."""
        with self._lock:
            self._switch(ClosedState(self))
        self._deliver_pending()

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
            self._pending.append(("state_change", (old.name, new.name)))

    def _admit(self) -> BreakerState:
        """Run before_call and return the state that admitted, so `call` can free the right slot."""
        try:
            with self._lock:
                state = self._current()
                state.before_call()
            return state
        finally:
            self._deliver_pending()

    def _abandon(self, admitted_by: BreakerState) -> None:
        # A slot belongs to the state that granted it; a newer half-open state never granted this one.
        with self._lock:
            if admitted_by is self._state:
                admitted_by.on_abandon()

    def _deliver_pending(self) -> None:
        """Hand queued events to listeners, outside the lock; one thread delivers at a time.

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
                    kind, args = self._pending.popleft()
                    listeners = self._listeners
                for listener in listeners:
                    try:
                        getattr(listener, kind)(self, *args)
                    except Exception:
                        logger.exception(
                            "Listener %r failed on %s of breaker %s; ignored", listener, kind, self.name
                        )
        except BaseException:
            with self._lock:
                self._delivering = False
            raise
