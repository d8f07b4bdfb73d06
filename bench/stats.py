"""Best-of-n and the median of paired ratios.

A paired ratio is the time of a contender over the time of its reference *in the same
repetition*: the two ran seconds apart, under the same load from the rest of the machine, so
the ratio cancels what the machine did to both. Its median over the repetitions is what the
tables call "paired"; the ratio of the best times is the other reading.

>>> paired_median({0: 2.0, 1: 2.2, 2: 9.0}, {0: 1.0, 1: 1.1, 2: 3.0})
2.0
>>> best_ratio([2.0, 2.2], [1.0, 1.1])
2.0
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping


def paired_median(
    times: Mapping[int, float], reference: Mapping[int, float], only: Iterable[int] | None = None
) -> float | None:
    """Median of ``times[r] / reference[r]`` over the repetitions both ran (and in ``only``)."""
    both = times.keys() & reference.keys()
    chosen = both if only is None else both & set(only)
    ratios = [times[r] / reference[r] for r in chosen if reference[r] > 0]
    return statistics.median(ratios) if ratios else None


def best_ratio(times: Iterable[float], reference: Iterable[float]) -> float | None:
    """The best (smallest) time over the best reference time."""
    mine, theirs = list(times), list(reference)
    if not mine or not theirs or min(theirs) <= 0:
        return None
    return min(mine) / min(theirs)


def spread(values: Iterable[float]) -> float | None:
    """How far apart readings are: largest over smallest, minus one (0.1 means 10%).

    >>> round(spread([1.0, 1.05, 1.1]) or 0, 3)
    0.1
    """
    numbers = [v for v in values if v > 0]
    return max(numbers) / min(numbers) - 1 if len(numbers) > 1 else None
