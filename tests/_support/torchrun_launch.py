"""torchrun, as the tests start it: ``torch.distributed.run``'s ``main`` with anyrdzv's
log records shown (with their time) beside torch's, and an optional hold.

``HOLD=<file>`` imports torch first, then waits for the file before torchrun starts, so
that a test can start an agent at a chosen moment without waiting seconds for the
import.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from torch.distributed.run import main

if __name__ == "__main__":
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("anyrdzv")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    hold = os.environ.get("HOLD")
    if hold:
        print("anyrdzv-test: torch imported, held", flush=True)
        while not os.path.exists(hold):
            time.sleep(0.01)
    main(sys.argv[1:])
