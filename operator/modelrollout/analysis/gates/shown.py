"""Three-way results of the anytime-valid ML gates (agreement, accuracy, compare, score, drift).

Each of these gates runs one test per (gate, stage) at the gate's level ``ctx.alpha``
(its share of ``falseRollbackBudget``) and says what the data has shown so far:

- **Pass**: the confidence sequence (CS) lies wholly on the good side of the limit;
- **Fail**: it lies wholly on the bad side;
- **Inconclusive**: not yet shown either way. That is gathering evidence, never missing
  data: the result carries ``samples`` and ``neededSamples`` (about how much data would
  decide at the current estimate), so the engine holds the rollout without counting the
  check towards ``inconclusiveLimit``.

The result's ``value`` is the plug-in estimate, ``lower``/``upper`` the CS and ``alpha``
its level (docs/analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from modelrollout.analysis import sequential as sq
from modelrollout.analysis.gates import common
from modelrollout.api.status import GateResult, Verdict

#: The search for ``neededSamples`` looks up to this many times the data so far; a truth
#: that sits on the limit is reported as needing that much.
NEEDED_HORIZON = 1e4

VERDICT = {
    sq.Shown.GOOD: Verdict.PASS,
    sq.Shown.BAD: Verdict.FAIL,
    sq.Shown.NOT_YET: Verdict.INCONCLUSIVE,
}
SAYS = {
    sq.Shown.GOOD: "shown within the limit",
    sq.Shown.BAD: "shown outside the limit",
    sq.Shown.NOT_YET: "not yet shown either way (gathering evidence)",
}


def level_text(alpha: float) -> str:
    """``99.5%`` for ``alpha`` 0.005: the CS's level as a reason shows it."""
    return f"{100 * (1 - alpha):.4g}%"


def needed(decides: Callable[[float], bool], n: float) -> float:
    """About how much data (in the units of ``n``) decides if the estimate holds on.

    The first size on a geometric grid (x1.25 steps) above ``n`` at which ``decides``
    says the CS would decide; ``NEEDED_HORIZON`` times ``n`` when none does (the truth
    sits on the limit). Always above ``n``: an estimate for the status, never a verdict.
    """
    base = max(n, 1.0)
    size = base
    while size < base * NEEDED_HORIZON:
        size *= 1.25
        if decides(size):
            return float(max(n + 1, math.ceil(size)))
    return float(max(n + 1, math.ceil(base * NEEDED_HORIZON)))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def result(
    name: str,
    shown: sq.Shown,
    *,
    value: float | None,
    interval: sq.Interval,
    alpha: float,
    limits: common.Limits,
    reason: str,
    samples: float | None,
    need: Callable[[], float] | None = None,
    floor: float | None = None,
) -> GateResult:
    """The gate's result; ``need`` is asked only when not yet shown (the engine waits).

    A decided result shows the gate's own minimum (``floor``: minPairs, minLabels...) as
    ``neededSamples``, which it has reached.
    """
    waiting = shown == sq.Shown.NOT_YET and need is not None
    base = common.gate_result(
        name,
        VERDICT[shown],
        value=value,
        reason=f"{reason}: {SAYS[shown]}",
        limits=limits,
        samples=samples,
        needed=need() if waiting and need is not None else floor,
    )
    return base.model_copy(
        update={
            "lower": _finite(interval.lower),
            "upper": _finite(interval.upper),
            "alpha": alpha,
        }
    )


def judge(interval: sq.Interval, limits: common.Limits) -> sq.Shown:
    """Good when every limit is shown to hold, bad when one is shown broken."""
    lo, hi = limits
    outcomes = []
    if hi is not None:
        outcomes.append(sq.judge_upper_limit(interval, hi).shown)
    if lo is not None:
        outcomes.append(sq.judge_lower_limit(interval, lo).shown)
    if sq.Shown.BAD in outcomes:
        return sq.Shown.BAD
    if outcomes and all(o == sq.Shown.GOOD for o in outcomes):
        return sq.Shown.GOOD
    return sq.Shown.NOT_YET
