"""``python -m enginehouse.training CONFIG_JSON_PATH``: run one fine-tuning job."""

import os
import signal
import sys
from pathlib import Path
from types import FrameType

from enginehouse.training.cancel import EXIT_CANCELLED
from enginehouse.training.report import output_dir_of, write_outcome


def _start() -> int:
    # Importing torch and transformers takes seconds, and a job cancelled meanwhile must end at
    # once. Nothing is written yet, so it can end on the spot: an exception raised into the
    # middle of an import would leave half-loaded modules behind (numpy cannot load twice).
    output_dir = output_dir_of(Path(sys.argv[1])) if len(sys.argv) == 2 else None

    def cancelled_while_starting(signum: int, frame: FrameType | None) -> None:
        if output_dir is not None:
            write_outcome(output_dir, "Cancelled")
        os._exit(EXIT_CANCELLED)

    signal.signal(signal.SIGTERM, cancelled_while_starting)
    signal.signal(signal.SIGINT, cancelled_while_starting)
    from enginehouse.training.worker import main

    return main()  # which listens for a cancel its own way from then on


if __name__ == "__main__":
    code = _start()
    # Every file is written and closed by now; skip the second or more that tearing down torch
    # and its thread pools takes, so that a cancelled job is gone as soon as it says so.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
