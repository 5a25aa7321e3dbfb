"""Named points where `PGSHIFT_FAILPOINT` can kill the process with SIGKILL, the way a crash or
an OOM kill would, so the crash tests hit exact moments: before a step, inside its transaction
(before COMMIT), after it committed, or after a number of backfill batches.

`PGSHIFT_FAILPOINT=cutover:3:in-transaction` dies inside cutover's fourth step's transaction;
`backfill:batch:2:in-transaction` inside the second batch of a backfill step, and
`backfill:4:batch:2:in-transaction` inside that of the phase's fifth step (one of several
tables' backfills).
Unset (always, in production) it costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal


def failpoint(label: str) -> None:
    if os.environ.get("PGSHIFT_FAILPOINT") == label:
        os.kill(os.getpid(), signal.SIGKILL)
