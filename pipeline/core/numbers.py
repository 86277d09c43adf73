"""The ranges a number of the settings or of the policy may take, as annotated types.

A field declares its range with its type, and msgspec checks it while decoding, naming the
field's path when a value is out of it. A bound also refuses NaN (no comparison with NaN
holds), and the upper bound of the float types refuses infinity: a plain `float` takes
both, and a NaN threshold or credit makes every comparison it meets quietly false.
"""

from __future__ import annotations

import sys
from typing import Annotated

from msgspec import Meta

LARGEST = sys.float_info.max  # the largest finite float: a bound that refuses infinity

NonNegative = Annotated[float, Meta(ge=0, le=LARGEST)]
Positive = Annotated[float, Meta(gt=0, le=LARGEST)]  # thresholds, durations in seconds
AtLeastOne = Annotated[float, Meta(ge=1, le=LARGEST)]  # a factor that never shrinks
Share = Annotated[float, Meta(ge=0, le=1)]
PositiveShare = Annotated[float, Meta(gt=0, le=1)]  # a share that must not be none

NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
AtLeastTwo = Annotated[int, Meta(ge=2)]  # a group, a pair of rounds: one is no evidence
