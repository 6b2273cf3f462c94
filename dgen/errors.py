"""Errors that dgen reports to users as one clear line (the CLI prints them without a traceback), and the
log format of its messages."""

import logging
import os


class DgenError(Exception):
    """A problem with the user's input or environment that dgen can name precisely."""


class ConfigError(DgenError):
    """A bad configuration key or value."""


class DataError(DgenError):
    """Missing, incomplete or corrupt dataset files, shards or manifests."""


class UnreadableSample(DataError):
    """One source item cannot be read; the shard writer skips and counts it."""


class _Format(logging.Formatter):
    """`dgen: message` for information, `dgen: warning: message` above it; the rank where there are several."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") != "1" else None
        where = record.name.split(".")[0] + (f"[{rank}]" if rank is not None else "")
        return f"{where}: {level}{record.getMessage()}"


def setup_logging() -> None:
    """dgen's messages on stderr, one line each; third-party INFO chatter (Accelerate's five lines per
    checkpoint) and DeepSpeed's accelerator auto-detection notice kept off the terminal."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Format())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for name in ("accelerate", "deepspeed", "torch.distributed", "DeepSpeed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not os.environ.get("DS_ACCELERATOR"):  # DeepSpeed logs a warning each time it has to guess
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
