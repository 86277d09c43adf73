"""The console's "now": the wall clock, read once for each answer.

Whether an action is in force at an instant decides a case's status (and so the queue's
status filters and counts), the case view's actions and its members' counts of measures in
force, and the account lookup's actions in force beside the throttling hook's verdict.
Each request reads the clock once (`now_ms`) and hands that instant to all it derives,
so one answer never says a measure stands in one place and has lapsed in another; the
index reads it when it takes in the outputs.

It is the wall clock, not the run's event time, because it is the clock of everything
that acts on the actions: the throttling hook judges a limit by it, and the desk issues an
approved measure for its term from the approval. So a backtest over old logs is judged
today: a measure whose term ended by its own times (a day's throttle issued on March's
events, opened in December) is shown expired and not in force, and its case is not
`enforced` (unless a measure without an end, such as a warning, stands), as the hook
following those actions would let the account act. Each action's own times are shown
beside it, for a reading of the run as it went.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """The console's now, in epoch milliseconds."""
    return int(time.time() * 1000)
