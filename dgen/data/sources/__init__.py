"""Dataset readers, one small module each. Importing this package registers them all."""

from dgen.data.sources import celeba, digits, folder, mnist, svhn, usps  # noqa: F401  (register themselves)
from dgen.data.sources.base import SOURCES, Sample, Source, get_source, register

__all__ = ["SOURCES", "Sample", "Source", "get_source", "register"]
