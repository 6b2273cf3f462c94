"""Dataset readers, one small module each. Importing this package registers them all."""

from dgen.data.sources import digits  # noqa: F401  (registers digits, digits-m)
from dgen.data.sources.base import SOURCES, Sample, Source, get_source, register

__all__ = ["SOURCES", "Sample", "Source", "get_source", "register"]
