"""Online statistical models: pure, synchronous, no I/O. Each works on plain numbers."""

from models.activity import RecentActivity
from models.actor_features import actor_features
from models.bot_score import BotScorer
from models.churn import quick_undos
from models.count_baseline import CountBaseline
from models.credit import Credit, level_of
from models.dormancy import DormancyWatch, Watched
from models.edge_burst import EdgeBurst
from models.follow_support import FollowSupport
from models.follower_composition import FollowerComposition
from models.lockstep import lockstep_groups, rounds
from models.near_duplicate import MinHasher, normalise
from models.network import network_of
from models.registration_burst import source_of

__all__ = [
    "BotScorer",
    "CountBaseline",
    "Credit",
    "DormancyWatch",
    "EdgeBurst",
    "FollowSupport",
    "FollowerComposition",
    "MinHasher",
    "RecentActivity",
    "Watched",
    "actor_features",
    "level_of",
    "lockstep_groups",
    "network_of",
    "normalise",
    "quick_undos",
    "rounds",
    "source_of",
]
