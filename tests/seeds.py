"""The seeds of the randomised tests: shown in pytest's header, replayed from the environment.

    WAE_FAULT_SEED=1234 pytest tests/test_faults.py tests/test_atomic.py     # the same kill points again
    WAE_FUZZ_SEED=5678 pytest tests/test_fuzz.py                             # the same hypothesis examples

In CI (CI=true) hypothesis is derandomized (conftest.py): its examples depend only on the test.
"""

from __future__ import annotations

import os


def _seed(variable: str) -> int:
    value = os.environ.get(variable)
    if not value:
        value = str(int.from_bytes(os.urandom(4), "little") % 100_000)
        # pytest-xdist's workers start after this runs in the controller and inherit its environment,
        # so every worker uses the seed the summary prints
        os.environ[variable] = value
    return int(value)


FAULT_SEED = _seed("WAE_FAULT_SEED")
FUZZ_SEED = _seed("WAE_FUZZ_SEED")
IN_CI = os.environ.get("CI", "").lower() == "true"
