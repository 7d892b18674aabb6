"""Shared test set-up: Hypothesis profiles and the per-dtype tolerance table.

Profiles: ``ci`` (the default; 200 examples per property, no deadline,
derandomised so a run is reproducible), ``dev`` (quicker local runs) and
``boundscheck`` (few examples, for the run with NUMBA_BOUNDSCHECK=1, whose
compiles are slow). Choose one with HYPOTHESIS_PROFILE.
"""

import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("ci", max_examples=200, derandomize=True, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("boundscheck", max_examples=15, derandomize=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
