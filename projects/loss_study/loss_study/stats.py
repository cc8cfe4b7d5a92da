"""Statistics of the loss study: the Student-t interval of a mean, the
verdict it gives, and paired differences of two final-stage rows."""
import math
from typing import Dict, Sequence

import numpy as np
from scipy.stats import t as student_t


def interval(values: Sequence[float], level: float = 0.95) -> Dict:
    """Mean, sample standard deviation and the ``level`` Student-t
    interval of the mean (None for fewer than two values)."""
    values = [float(v) for v in values]
    n = len(values)
    out = dict(
        n=n,
        values=values,
        mean=float(np.mean(values)) if n else None,
        std=None,
        low=None,
        high=None)
    if n > 1:
        std = float(np.std(values, ddof=1))
        quantile = float(student_t.ppf(0.5 + level / 2, n - 1))
        half = quantile * std / math.sqrt(n)
        out.update(std=std, low=out['mean'] - half, high=out['mean'] + half)
    return out


def verdict(stat: Dict) -> str:
    """``'wins'`` / ``'loses'`` when the interval excludes 0, else
    ``'ties'``."""
    if stat['low'] is not None and stat['low'] > 0:
        return 'wins'
    if stat['high'] is not None and stat['high'] < 0:
        return 'loses'
    return 'ties'


def paired(first: Dict, second: Dict, metric: str) -> Dict:
    """``first - second`` on ``metric`` over the pairs both rows have
    (rows as ``report.final_row`` gives them)."""
    both = [p for p in first['by_pair'] if p in second['by_pair']]
    return interval([
        first['by_pair'][p][metric] - second['by_pair'][p][metric]
        for p in both
    ])


def ci_text(stat: Dict) -> str:
    """``+1.23 [+0.45, +2.01]``; ``+1.23 (n=1)`` without an interval."""
    if stat['mean'] is None:
        return '-'
    if stat['low'] is None:
        return f"{stat['mean']:+.2f} (n={stat['n']})"
    return f"{stat['mean']:+.2f} [{stat['low']:+.2f}, {stat['high']:+.2f}]"
