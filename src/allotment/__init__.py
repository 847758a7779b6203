"""Allotment: fair, efficient sharing of a scarce GPU fleet among teams."""

__all__ = ["__version__"]
__version__ = "0.1.0"
