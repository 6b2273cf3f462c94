"""How busy the GPU is: the share of time a kernel was running, as NVML measures it (what
`nvidia-smi` shows as GPU-Util), averaged over a window of steps.

    busy = BusySampler.start(torch.device("cuda", 0))   # None on CPU or without NVML
    ...                                                  # train
    busy.window()                                        # mean % since the last call, e.g. 97.5

A background thread reads NVML every 50 ms; reading it costs the training loop nothing (no CUDA
call, no host sync). Below ~90% the GPU waits on something else: the input pipeline, Python
overhead between kernel launches, or host syncs.
"""

from __future__ import annotations

import logging
import threading

import torch

log = logging.getLogger(__name__)


class BusySampler:
    def __init__(self, device: torch.device, period: float = 0.05):
        self.device, self.period = device, period
        self.total, self.count = 0.0, 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gpu-busy", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, device: torch.device) -> "BusySampler | None":
        if device.type != "cuda":
            return None
        try:
            torch.cuda.utilization(device)  # NVML through torch (it maps CUDA_VISIBLE_DEVICES to NVML's numbering)
            return cls(device)
        except Exception as e:  # no nvidia-ml-py, a driver without NVML, MIG slices
            log.info("GPU busy time not measured (NVML unavailable: %s)", e)
            return None

    def _run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                busy = torch.cuda.utilization(self.device)
            except Exception:
                return
            with self.lock:
                self.total, self.count = self.total + busy, self.count + 1

    def window(self) -> float | None:
        """Mean busy % since the previous call (None if no sample was taken)."""
        with self.lock:
            mean = self.total / self.count if self.count else None
            self.total, self.count = 0.0, 0
        return mean

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=1)

