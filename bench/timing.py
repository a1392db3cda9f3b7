"""Shared by the benchmarks: the nearest-rank percentile of a list of timings."""

from __future__ import annotations


def percentile(samples: list[float], share: float) -> float:
    """The sample at ``share`` (0..1) of the sorted list, nearest rank: ``percentile(t, 0.99)`` is p99."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]
