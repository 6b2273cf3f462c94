"""Stop requests: SIGUSR1 or SIGTERM make the run checkpoint at the next step boundary and exit.

The handler only sets a flag; the trainer checks it between steps (all ranks agree through one
all-reduce, so a signal that reached only some ranks still stops all of them at the same step, and
every rank logs its name). Loader worker processes ignore these signals (see dgen.data.stream), so a
signal sent to the whole process group does not kill them mid-batch.

A trainer started by a launcher (`accelerate launch`, `torchrun`) also asks the kernel for a SIGTERM
when that launcher dies: Accelerate's one-process launcher dies at once of a SIGTERM without passing
it on, and the trainer would otherwise train on, orphaned, to the end.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        stop_when_launcher_dies()
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum else ""


_PR_SET_PDEATHSIG = 1


def stop_when_launcher_dies() -> bool:
    """Under a launcher (it sets LOCAL_RANK or ACCELERATE_* variables), have the kernel send this process
    SIGTERM when its parent dies (Linux). Returns whether that was arranged. Call it in the main thread."""
    launched = "LOCAL_RANK" in os.environ or any(k.startswith("ACCELERATE_") for k in os.environ)
    if not (launched and sys.platform.startswith("linux")):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True
