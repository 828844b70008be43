"""Pooling for eager code: the core functions themselves (no state to thread)."""

from blox.core import avg_pool, max_pool, min_pool, pool, sum_pool

__all__ = ["avg_pool", "max_pool", "min_pool", "pool", "sum_pool"]
