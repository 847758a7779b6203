"""Allotment: fair, efficient sharing of a scarce GPU fleet among teams."""

from allotment import _native

__all__ = ["__version__"]
__version__ = "0.1.0"

_native.activate()  # the mypyc build of the hot path, only if it matches the sources
