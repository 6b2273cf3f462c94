"""Stop requests: SIGUSR1 or SIGTERM make the run checkpoint at the next step boundary and exit.

The handler only sets a flag; the trainer checks it between steps (all ranks agree through one
all-reduce, so a signal that reached only some ranks still stops all of them at the same step).
Loader worker processes ignore these signals (see dgen.data.stream), so a signal sent to the whole
process group does not kill them mid-batch.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
