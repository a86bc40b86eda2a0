"""The venue's clock: server time read periodically, interpolated with ``time.monotonic()`` in between.

Never the local wall clock alone: local skew cannot misplace a bar, and a local simulator may run its clock faster
than real time (the interpolation rate is measured from successive server reads, so an accelerated venue clock
is followed too).
"""

from __future__ import annotations

import time


class VenueClock:
    """Venue time in UTC ms (``now_ms``) and Unix s (``now``).

    Parameters
    ----------
    read_ms : callable
        Returns the venue's server time in UTC ms (e.g. ``BybitBroker.server_time_ms``).
    resync_s : float
        Real seconds between server reads.
    """

    def __init__(self, read_ms, *, resync_s: float = 1.0):
        self.read_ms, self.resync_s = read_ms, resync_s
        self.rate = 1.0  # venue ms per real ms
        self._base_ms: int | None = None
        self._base_mono = 0.0
        self.reads = 0
        self.sync()
        time.sleep(0.06)
        self.sync()  # a second read measures the rate (an accelerated simulator runs faster than 1:1)

    def sync(self) -> int:
        """Read the server time now; updates the interpolation rate. Returns venue UTC ms."""
        t0 = time.monotonic()
        ms = int(self.read_ms())
        t1 = time.monotonic()
        mid = (t0 + t1) / 2
        if self._base_ms is not None and mid - self._base_mono > 0.05:
            rate = (ms - self._base_ms) / ((mid - self._base_mono) * 1000.0)
            if rate > 0:
                self.rate = rate
        self._base_ms, self._base_mono = ms, mid
        self.reads += 1
        return ms

    def now_ms(self) -> int:
        """Venue time (UTC ms): the last server read + rate x monotonic time elapsed since."""
        if time.monotonic() - self._base_mono > self.resync_s:
            return self.sync()
        return int(self._base_ms + (time.monotonic() - self._base_mono) * 1000.0 * self.rate)

    def now(self) -> int:
        """Venue time, Unix seconds."""
        return self.now_ms() // 1000

    def advance(self, t: int) -> None:
        """Engine Clock protocol: live time advances by itself."""

    def sleep_until(self, target_ms: int, *, max_real_s: float = 0.5) -> int:
        """Sleep until venue time >= ``target_ms`` (re-reading the server near the target). Returns venue ms."""
        while True:
            now = self.now_ms()
            if now >= target_ms:
                now = self.sync()
                if now >= target_ms:
                    return now
            real = (target_ms - now) / 1000.0 / max(self.rate, 1e-9)
            time.sleep(min(max_real_s, max(0.001, real)))
