"""Hypothesis profiles: ``ci`` is derandomised so CI runs repeat exactly."""

from __future__ import annotations

import os
import tempfile

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# No test writes into the checkout: a process or a Database that falls back to the default
# data directory (audit key, head file, run folders) gets a temporary one for this run.
os.environ.setdefault("ALLOTMENT_DATA_DIR", tempfile.mkdtemp(prefix="allotment-test-data-"))
