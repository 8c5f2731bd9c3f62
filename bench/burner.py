"""``python -m bench.burner SHARE``: a process busy for SHARE of one core, in short bursts, until
killed (``bench/contention.py`` runs the engine beside it). Imports nothing heavy, so it is busy
from its first tenth of a second."""

from __future__ import annotations

import sys
import time

# One burst per period: about one decode step of the sweep's smallest model, as the serving
# path's per-step work comes.
PERIOD_S = 0.009


def burn(share: float, period_s: float = PERIOD_S) -> None:
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < share * period_s:
            pass
        time.sleep(max(0.0, period_s - (time.perf_counter() - start)))


if __name__ == "__main__":
    burn(float(sys.argv[1]))
