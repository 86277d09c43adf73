"""Online statistical models: pure, synchronous, no I/O. Each works on plain numbers."""

from models.count_baseline import CountBaseline
from models.edge_burst import EdgeBurst
from models.follow_support import FollowSupport
from models.follower_composition import FollowerComposition
from models.network import network_of

__all__ = ["CountBaseline", "EdgeBurst", "FollowSupport", "FollowerComposition", "network_of"]
