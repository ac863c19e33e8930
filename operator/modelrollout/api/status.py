"""The ModelRollout's status: every fact the operator needs to carry on after a restart.

Phases, stages and verdicts are the words a user reads in ``kubectl get mro`` and in
Events; each value has a line of doc.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from modelrollout.api.base import ApiModel, Percent


class Phase(StrEnum):
    """Where the rollout is, as a user reads it."""

    PENDING = "Pending"
    """Accepted; nothing moved yet."""
    SHADOWING = "Shadowing"
    """The candidate gets mirrored traffic; its answers are thrown away."""
    PROGRESSING = "Progressing"
    """The candidate serves live traffic (canary steps, blue-green preview)."""
    PAUSED = "Paused"
    """Held: a human gate, a pause command, spec.paused, or inconclusive analysis."""
    PROMOTING = "Promoting"
    """All traffic is on the candidate; post-promotion checks or scale-down delay run."""
    SUCCEEDED = "Succeeded"
    """The candidate is the new stable."""
    ROLLED_BACK = "RolledBack"
    """Analysis or a human sent all traffic back to stable (also: a promotion undone)."""
    FAILED = "Failed"
    """The rollout cannot run as written (bad spec, missing route); traffic stays on stable."""

    @property
    def is_terminal(self) -> bool:
        """The rollout has ended: only a new candidate (or a retry) moves it again."""
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class Stage(StrEnum):
    """The part of the strategy in progress."""

    SHADOW = "shadow"
    CANARY = "canary"
    PREVIEW = "preview"
    """Blue-green: the candidate is judged before the switch."""
    POST_PROMOTION = "postPromotion"
    """Blue-green: switched; the old version still warm."""
    ROLLBACK_WINDOW = "rollbackWindow"
    """Promoted (phase Succeeded), within spec.rollbackWindow: the previous version can be
    brought back by an undo, and the gates that list this stage are still checked."""
    DONE = "done"


class Verdict(StrEnum):
    """The outcome of one gate in one check; measurement failures are values, not errors."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    """No data, NaN, an empty or a multi-series result, or the source is unreachable."""


#: How a gate result's ``reason`` starts when Prometheus gave no answer, and when it
#: answered and refused the query: status, Events and the CLI tell the two apart by it.
REASON_UNREACHABLE = "unreachable: "
REASON_REFUSED = "query refused: "


class Weights(ApiModel):
    stable: Percent = 100
    candidate: Percent = 0


class GateResult(ApiModel):
    metric: str
    value: float | None = None
    min: float | None = None
    max: float | None = None
    verdict: Verdict
    reason: str | None = None
    samples: float | None = None
    needed_samples: float | None = None
    lower: float | None = None
    """The lower end of the gate's anytime-valid confidence sequence at this check."""
    upper: float | None = None
    """The upper end: Pass when it lies wholly on the good side of the limit."""
    alpha: float | None = None
    """The error level of the gate's test (its share of ``falseRollbackBudget``)."""

    @property
    def limit_text(self) -> str:
        return limit_text(self.min, self.max)


def limit_text(minimum: float | None, maximum: float | None) -> str:
    """A gate's limits as every message and table shows them: ``>= 0.9 and <= 1``.

    Empty when the gate has no limit (a drift or statistical gate may judge
    otherwise). A function as well as :attr:`GateResult.limit_text`, so the CLI
    can show a result it reads as a plain dict.
    """
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


class AnalysisRun(ApiModel):
    at: str
    stage: Stage
    step_index: int | None = None
    verdict: Verdict
    results: list[GateResult] = Field(default_factory=list)


class HistoryEntry(ApiModel):
    at: str
    phase: Phase
    stage: Stage
    step_index: int | None = None
    weight: Percent = 0
    mirror_percent: Percent = 0
    reason: str
    message: str | None = None
    candidate_version: str | None = None


class ScaledDown(ApiModel):
    """A Deployment the operator scaled to zero, and the replicas it had, to restore them."""

    version: str
    replicas: int = Field(ge=0)


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ModelRolloutStatus(ApiModel):
    """Every fact the operator needs to carry on after a restart lives here."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase = Phase.PENDING
    stage: Stage | None = None
    step_index: int | None = None
    stable_version: str | None = None
    candidate_version: str | None = None
    weights: Weights = Field(default_factory=Weights)
    mirror_percent: Percent = 0
    weights_approximate: bool | None = None
    observed_generation: int | None = None
    rollout_started_at: str | None = None
    waiting_since: str | None = Field(
        default=None,
        description="When the rollout started to wait for a slot (--max-concurrent-rollouts); "
        "waiting rollouts are admitted in this order.",
    )
    stage_started_at: str | None = None
    step_started_at: str | None = None
    last_check_at: str | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    consecutive_passes: int = 0
    pause_reason: str | None = None
    # A checkpoint is where a human must approve (``shadow:end``, ``canary:3``); in Python it
    # is never called a gate, which is a metric check. The wire names (awaitingApproval,
    # approvedGate) stay as they are: stored objects and older CLIs use them.
    awaiting_approval: str | None = None
    """The checkpoint the rollout is paused at, waiting for a human to promote."""
    approved_checkpoint: str | None = Field(default=None, alias="approvedGate")
    """The checkpoint a human approved ahead of time; spent when the rollout passes it."""
    aborted: bool | None = None
    handled_request: str | None = None
    scale_down_at: str | None = None
    """Blue-green: when the operator scales the old version's Deployment down (never while
    a rollback window is open)."""
    scaled_down: ScaledDown | None = None
    """The old version's Deployment the operator scaled down, until a rollback or an undo
    restores it or a new rollout starts."""
    previous_stable_version: str | None = None
    """The version that was stable before the last promotion."""
    undo_until: str | None = None
    """When the rollback window after the last promotion ends (spec.rollbackWindow); until
    then ``undo`` sends all traffic back to previousStableVersion."""
    last_analysis: AnalysisRun | None = None
    analysis_ledger: list[AnalysisRun] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None
