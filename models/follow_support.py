"""How many new followers an account's own audience explains, and a running sum of the
follows it does not.

Organic followers come with attention: people follow an account whose content they
click, repost and comment on, so an account's follows per window track its engagement per
window, through its daily rhythm and through a viral spike alike. Bought followers come
without it. `FollowSupport` learns an account's follows-per-engagement ratio, predicts a
window's follows from that window's engagement, and scores the excess on the Anscombe
(variance-stabilised) scale. A one-sided CUSUM of the excess catches a slow drip of a few
extra follows per window that no single window shows; a window in excess teaches the
ratio at most `learn_below` deviations, so a campaign becomes the account's normal only
slowly (never within the CUSUM's reach) while ordinary noise is learned unbiased.

    >>> s = FollowSupport(alpha=0.1, warmup=4)
    >>> for _ in range(12):
    ...     _ = s.update(follows=5, engagement=100)
    >>> s.update(follows=60, engagement=1200) < 2  # a viral window: attention came too
    True
    >>> s.update(follows=60, engagement=100) > 5  # followers without attention
    True
"""

from __future__ import annotations

import math

from models.scales import anscombe, inverse_anscombe


class FollowSupport:
    """Follows predicted from engagement, the excess z, and its CUSUM.

    `update(follows, engagement)` returns the excess z of this window (0 while there is
    not enough history, or when the account has no engagement to learn from); `cusum` is
    max(0, cusum + min(z, cap) - allowance) after each window (z counting only in windows
    with at least `min_ratio` times the predicted follows) and `predicted` the follows the
    engagement explained.
    """

    __slots__ = (
        "allowance",
        "alpha",
        "cap",
        "cusum",
        "engagement_mean",
        "follows_mean",
        "learn_below",
        "min_ratio",
        "n",
        "predicted",
        "resid_var",
        "warmup",
        "z",
    )

    def __init__(
        self,
        alpha: float = 0.05,
        warmup: int = 6,
        allowance: float = 1.0,
        cap: float = 4.0,
        learn_below: float = 3.0,
        min_ratio: float = 1.5,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.warmup = warmup
        self.allowance = allowance
        self.cap = cap
        self.learn_below = learn_below
        self.min_ratio = min_ratio
        self.follows_mean = 0.0
        self.engagement_mean = 0.0
        self.resid_var = 1.0
        self.n = 0
        self.cusum = 0.0
        self.z = 0.0
        self.predicted: float | None = None

    @property
    def known(self) -> bool:
        """Whether the ratio has been learned well enough to predict from."""
        return self.n >= self.warmup and self.engagement_mean > 0.0

    def update(self, follows: float, engagement: float, floor: float = 0.0) -> float:
        """Score one window. `floor`: follows the caller already expects whatever the
        engagement (the account's own recent normal); the prediction is never below it,
        so a lagging or non-proportional engagement signal alone raises no excess."""
        learned = follows
        if self.known:
            ratio = self.follows_mean / self.engagement_mean
            self.predicted = max(engagement * ratio, floor)
            y_pred = anscombe(self.predicted)
            sd = math.sqrt(max(self.resid_var, 1.0))
            self.z = (anscombe(follows) - y_pred) / sd
            # a big account's ordinary wobble is many follows but a small share of them:
            # only windows at least `min_ratio` times the prediction add to the CUSUM
            step = self.z if follows >= self.min_ratio * self.predicted else min(self.z, 0.0)
            self.cusum = max(0.0, self.cusum + min(step, self.cap) - self.allowance)
            if self.z > self.learn_below:  # an excess window teaches at most this much
                learned = inverse_anscombe(y_pred + self.learn_below * sd)
            resid = anscombe(learned) - y_pred
        else:
            self.predicted, self.z, resid = None, 0.0, 0.0
        self._learn(learned, engagement, resid)
        return self.z

    def _learn(self, follows: float, engagement: float, resid: float) -> None:
        a = self.alpha
        if self.n == 0:
            self.follows_mean, self.engagement_mean = follows, engagement
        else:
            self.follows_mean += a * (follows - self.follows_mean)
            self.engagement_mean += a * (engagement - self.engagement_mean)
            self.resid_var = (1.0 - a) * (self.resid_var + a * resid * resid)
        self.n += 1
