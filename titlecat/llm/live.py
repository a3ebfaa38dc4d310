"""What the workers of a live backend share: one pace (rate limit + server push-back) and one circuit breaker.

Both are thread-safe: every worker of `OpenAICompatibleModel` asks the same
`Throttle` before it sends and tells the same `CircuitBreaker` what came back.
"""

from __future__ import annotations

import random
import threading
import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None) -> float | None:
    """The delay a `Retry-After` header asks for (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class Throttle:
    """One pace for all workers: at most `requests_per_minute` sends, and one shared pause when the server pushes back.

    A 429 (or any answer with `Retry-After`) pauses every worker, not only the
    one that got it: for `Retry-After` seconds when the server says so, else
    for an exponential backoff that grows with each push-back in a row and
    resets on the next answer. Workers whose requests left before the pause
    began do not stack more pauses on it: one wave of 429s is one backoff.
    """

    def __init__(self, requests_per_minute: float = 0, backoff: float = 1.0, max_backoff: float = 30.0):
        self.interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._next_send = 0.0
        self._paused_at = float("-inf")
        self._paused_until = 0.0
        self._level = 0  # push-backs in a row

    def acquire(self, stop: threading.Event) -> float:
        """Wait for this worker's turn (or until `stop` is set); returns the send time."""
        while not stop.is_set():
            with self._lock:
                now = time.monotonic()
                wait = max(self._paused_until, self._next_send) - now
                if wait <= 0:
                    self._next_send = now + self.interval
                    return now
            stop.wait(wait)
        return time.monotonic()

    def push_back(self, sent_at: float, retry_after: float | None) -> None:
        with self._lock:
            if sent_at < self._paused_at:
                return  # sent before the current pause began: that pause already answers this wave
            if retry_after is None:
                retry_after = self.backoff * 2**self._level * (1 + random.random() / 4)
            now = time.monotonic()
            self._level += 1
            self._paused_at = now
            self._paused_until = max(self._paused_until, now + min(max(retry_after, 0.0), self.max_backoff))

    def answered(self) -> None:
        with self._lock:
            self._level = 0


class CircuitBreaker:
    """Decides that an endpoint is down, so that a run stops with one error instead of failing title after title.

    Connection errors, timeouts and 5xx count as failures; any answer resets
    the count. The breaker trips once `titles` distinct titles have failed in
    a row and either one of them has used up its tries or the failures have
    gone on for `seconds` (counted from the send of the first failed request,
    so requests that time out together trip it at once): an endpoint that
    refuses or hangs stops the run, a short outage that the retries bridge
    does not. `titles = 0` turns it off.
    """

    def __init__(self, titles: int = 3, seconds: float = 10.0):
        self.titles = titles
        self.seconds = seconds
        self._lock = threading.Lock()
        self._failed: set[str] = set()
        self._since = 0.0
        self.last_cause = ""
        self.tripped = False
        self.tripped_titles = 0  # titles failed in a row when it tripped

    def answered(self) -> None:
        with self._lock:
            self._failed.clear()

    def failure(self, title: str, cause: str, *, sent_at: float, gave_up: bool) -> bool:
        """Record one failed attempt (sent at `sent_at`, time.monotonic); True when the breaker is (now) tripped."""
        with self._lock:
            now = time.monotonic()
            if not self._failed:
                self._since = sent_at  # a timeout has been failing since its request left
            self._failed.add(title)
            self.last_cause = cause
            if self.titles > 0 and len(self._failed) >= self.titles and (gave_up or now - self._since >= self.seconds):
                if not self.tripped:
                    self.tripped, self.tripped_titles = True, len(self._failed)
            return self.tripped
