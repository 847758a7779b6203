"""A quota period: one calendar month in UTC, written ``YYYY-MM``.

Plans, requests, disputes' quota changes and accounting are all per period. A period the
user writes is parsed once, here: ``1970-01`` to ``2099-12``, else an ``InputError`` that
names the field. Its bounds are Unix times: ``start`` is the first second of the month,
``end`` the first second of the next (so ``start <= t < end`` for every ``t`` in it).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from allotment.errors import InputError

PATTERN = r"^(19[7-9]\d|20\d\d)-(0[1-9]|1[0-2])$"  # also the API schemas' pattern
_RE = re.compile(PATTERN)


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A month; ordered by time, ``str()`` is ``YYYY-MM``."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str, field: str = "period") -> Period:
        """``YYYY-MM`` (1970-2099) as a period; else an ``InputError`` naming ``field``."""
        if not isinstance(text, str) or not _RE.fullmatch(text):
            raise InputError(field, f"{text!r}: use YYYY-MM")
        return cls(int(text[:4]), int(text[5:7]))

    @staticmethod
    def is_valid(text: str) -> bool:
        return isinstance(text, str) and _RE.fullmatch(text) is not None

    @classmethod
    def of(cls, t: float) -> Period:
        """The month (UTC) of Unix time ``t``."""
        got = time.gmtime(t)
        return cls(got.tm_year, got.tm_mon)

    def previous(self) -> Period:
        return Period(self.year - 1, 12) if self.month == 1 else Period(self.year, self.month - 1)

    def next(self) -> Period:
        return Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)

    @property
    def start(self) -> int:
        """Unix time of the month's first second."""
        return calendar.timegm((self.year, self.month, 1, 0, 0, 0))

    @property
    def end(self) -> int:
        """Unix time of the next month's first second (the period holds ``t < end``)."""
        return self.next().start

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
