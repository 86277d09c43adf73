"""Online statistical models: pure, synchronous, no I/O. Each works on plain numbers."""

from models.count_baseline import CountBaseline

__all__ = ["CountBaseline"]
