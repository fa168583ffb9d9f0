"""Paired comparison of methods that differ in one option only: `edgecl report --paired OPTION`.

Two method groups (edgecl.report.aggregate) form a pair when their options are equal except
OPTION; the group at OPTION's default (else the first value in sorted order) is the baseline.
Their runs are matched by seed and test fold, so each pair of runs shares its data split, task
order and initial weights and the difference removes that part of the seed noise. Per figure:
both sides' mean and sample std over the matched runs, the mean and std of the per-seed
differences (other - baseline), a two-sided paired t-test on them, and whether the other side's
mean lies within one baseline standard deviation of the baseline's mean.

The t-test is exact: for integer degrees of freedom the Student t distribution function has a
closed form (Abramowitz and Stegun 26.7.3 and 26.7.4), so no statistics library is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from edgecl.config import field_options
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import MethodGroup, Run, Workspace, mean_std

PAIRED_METRICS = ("A_last", "BWT")


def student_t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` (a positive integer) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            series += term
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term = series = 1.0
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            series += term
        inside = math.sin(theta) * series
    return min(1.0, max(0.0, 1.0 - inside))


def paired_t_test(differences: Sequence[float]) -> tuple[float | None, float | None]:
    """(t, two-sided p) of the mean of paired differences against 0; (None, None) for fewer than
    two pairs; identical nonzero differences give t = +-inf and p = 0, all-zero ones t = 0, p = 1.
    Differences equal but for float rounding (accuracies are ratios of clip counts) count as
    identical, not as a huge finite t."""
    n = len(differences)
    if n < 2:
        return None, None
    mean, std = mean_std(differences)
    assert mean is not None and std is not None
    if std <= 1e-12 * max(1.0, max(abs(d) for d in differences)):
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (std / math.sqrt(n))
    return t, student_t_two_sided_p(t, n - 1)


def _value(group: MethodGroup, option: str) -> Any:
    return group.key.get(option, field_options()[option].default)


def _pairs_of_groups(groups: list[MethodGroup], option: str) -> list[tuple[MethodGroup, MethodGroup]]:
    """(baseline, other) for every group whose options equal another's except `option`."""
    default = field_options()[option].default
    by_rest: dict[str, list[MethodGroup]] = {}
    for group in groups:
        rest = {k: v for k, v in group.key.items() if k != option}
        by_rest.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(group)
    pairs = []
    for same in by_rest.values():
        if len(same) < 2:
            continue
        same.sort(key=lambda g: (_value(g, option) != default, str(_value(g, option))))
        pairs += [(same[0], other) for other in same[1:]]
    return pairs


def _match(baseline: MethodGroup, other: MethodGroup) -> list[tuple[Run, Run]]:
    def where(run: Run) -> tuple[Any, Any]:
        return run.config.get("seed"), run.config.get("test_fold")

    others = {where(run): run for run in other.runs}
    return [(run, others[where(run)]) for run in sorted(baseline.runs, key=lambda r: str(where(r)))
            if where(run) in others]


def _metric_row(matched: list[tuple[Run, Run]], metric: str) -> dict[str, Any]:
    values = [(a.config.get("seed"), a.figures()[metric], b.figures()[metric]) for a, b in matched]
    pairs = [(seed, a, b) for seed, a, b in values if a is not None and b is not None]
    base = [a for _, a, _ in pairs]
    other = [b for _, _, b in pairs]
    diffs = [b - a for _, a, b in pairs]
    (base_mean, base_std), (other_mean, other_std) = mean_std(base), mean_std(other)
    diff_mean, diff_std = mean_std(diffs)
    t, p = paired_t_test(diffs)
    within = (None if base_std is None or base_mean is None or other_mean is None
              else abs(other_mean - base_mean) <= base_std)
    return {"pairs": len(pairs), "seeds": [seed for seed, _, _ in pairs],
            "baseline": base, "other": other,
            "baseline_mean": base_mean, "baseline_std": base_std,
            "other_mean": other_mean, "other_std": other_std,
            "diff_mean": diff_mean, "diff_std": diff_std, "t": t, "p": p,
            "within_one_baseline_std": within}


def paired_comparisons(ws: Workspace, option: str,
                       metrics: Sequence[str] = PAIRED_METRICS) -> list[dict[str, Any]]:
    """One entry per (baseline, other) pair of groups that differ in `option` only."""
    if option not in field_options():
        raise EdgeclError(f"--paired: {option!r} is not an edgecl train option")
    out = []
    for baseline, other in _pairs_of_groups(ws.groups, option):
        matched = _match(baseline, other)
        out.append({"option": option, "baseline": baseline.label, "other": other.label,
                    "baseline_value": _value(baseline, option),
                    "other_value": _value(other, option),
                    "seeds": [a.config.get("seed") for a, _ in matched],
                    "metrics": {m: _metric_row(matched, m) for m in metrics}})
    return out
