"""API keys and rate limits.

Keys arrive as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (and, for WebSockets, whose
browser API cannot set headers, as ``?api_key=<key>``). A key is never stored or logged: tasks are
owned by a short SHA-256 digest of it, so one key cannot read another's tasks.

Rate limits are token buckets per caller (the key's digest, or the client address when keys are
off): ``burst`` requests at once, refilled at ``per_minute``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Mapping


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class KeyRing:
    """The accepted API keys (empty: authentication off)."""

    def __init__(self, keys: list[str]):
        self._digests = {key_digest(key) for key in keys if key}

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner_of(self, key: str | None) -> str | None:
        """The owner id of a valid key, else None. Compares digests in constant time."""
        if not key:
            return None
        digest = key_digest(key)
        match = None
        for known in self._digests:  # no early exit: timing says nothing about which key is close
            if hmac.compare_digest(known, digest):
                match = known
        return match


def key_from(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The API key a request carries, if any (``Authorization: Bearer``, ``X-API-Key``, ``?api_key``)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if headers.get("x-api-key", "").strip():
        return headers["x-api-key"].strip()
    if query is not None and query.get("api_key", "").strip():
        return query["api_key"].strip()
    return None


class RateLimiter:
    """Token buckets per caller; ``per_minute == 0`` turns limiting off."""

    def __init__(self, per_minute: float, burst: int, max_callers: int = 100_000):
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill time)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, caller: str, now: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until a token is available."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            if len(self._buckets) > self.max_callers:  # a flood of addresses must not grow memory forever
                self._forget_full(now)
            return max(0.001, (1.0 - tokens) / self.rate)

    def _forget_full(self, now: float) -> None:
        """Drop callers whose buckets have refilled (they are indistinguishable from new ones)."""
        for caller, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self._buckets[caller]


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
