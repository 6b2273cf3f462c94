"""Errors that dgen reports to users as one clear line (the CLI prints them without a traceback)."""


class DgenError(Exception):
    """A problem with the user's input or environment that dgen can name precisely."""


class DataError(DgenError):
    """Missing, incomplete or corrupt dataset files, shards or manifests."""


class UnreadableSample(DataError):
    """One source item cannot be read; the shard writer skips and counts it."""
