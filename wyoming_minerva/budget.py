"""The process-wide budget of buffered audio: what every connection together may hold in memory at once.

Audio payloads being read and utterances being collected take their bytes from one `AudioBudget` and give
them back when done; when it is spent the request is refused with `server_busy` instead of growing the
process. Each holder takes through its own `BudgetLease`, so whatever it still holds is returned in one call
when it ends, whichever way it ends.
"""

from __future__ import annotations

from .errors import ServerBusyError


class AudioBudget:
    """A byte count shared by the whole process (single event loop: no lock needed)."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("an audio budget needs at least one byte")
        self.limit = limit_bytes
        self.used = 0
        self.refusals = 0

    def lease(self) -> BudgetLease:
        return BudgetLease(self)

    def _take(self, size: int) -> None:
        if self.used + size > self.limit:
            self.refusals += 1
            raise ServerBusyError(
                f"the server holds its limit of {self.limit // (1024 * 1024)} MiB of buffered audio "
                "(--max-buffered-audio-mb); try again shortly"
            )
        self.used += size

    def _give(self, size: int) -> None:
        self.used -= size


class BudgetLease:
    """What one holder (a payload being read, one utterance) has taken from the budget."""

    def __init__(self, budget: AudioBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        """Hold `size` more bytes; ServerBusyError (holding nothing more) when the budget is spent."""
        self._budget._take(size)
        self.held += size

    def release(self) -> None:
        """Give back everything this lease holds; safe to call twice."""
        self._budget._give(self.held)
        self.held = 0


__all__ = ["AudioBudget", "BudgetLease"]
