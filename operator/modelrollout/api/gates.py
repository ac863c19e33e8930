"""Gates: what a rollout measures and the limit each measurement must hold.

One gate (:class:`MetricGate`) has exactly one source: a PromQL ``query``, a
built-in threshold (``latency``, ``errorRate``, ``throughput``, ``nullRate``) or an
ML judge (``drift``, ``agreement``, ``compare``, ``score``, ``accuracy``). How each
kind is measured and judged lives in ``modelrollout.analysis``; docs/analysis.md
has the formulas.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelrollout.api.base import ApiModel, Duration, cel_rules
from modelrollout.api.status import Stage


class InconclusivePolicy(StrEnum):
    """What a check that could not be measured leads to."""

    HOLD = "Hold"
    """Count it towards inconclusiveLimit; at the limit, pause for a human."""
    FAIL = "Fail"
    """Count it as a failed check."""
    IGNORE = "Ignore"
    """Leave it out of the verdict (the ledger still shows it)."""


class LatencyGate(ApiModel):
    quantile: float = Field(default=0.99, gt=0, lt=1)
    metric: str = Field(default="model_request_duration_seconds")


class CounterGate(ApiModel):
    metric: str | None = Field(
        default=None, description="Override the counter's name (defaults by gate kind)."
    )


#: Prometheus metric and label names, for the names a gate puts into PromQL itself.
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
MetricName = Annotated[str, Field(pattern=METRIC_NAME_PATTERN, max_length=200)]
LabelName = Annotated[str, Field(pattern=LABEL_NAME_PATTERN, max_length=100)]
HarmfulDirection = Literal["increase", "decrease", "either"]
#: Shifts of per-step values within this share of stable's median are "no change": 0.1,
#: not 0.25, since 0.25 let 88 % of 20 % latency regressions pass (docs/analysis.md).
DEFAULT_EFFECT_TOLERANCE = 0.1


#: Why ``ks`` is refused on a counter's categories.
KS_ON_CATEGORIES = (
    "drift method ks needs ordered bins (a histogram); the categories of a counter have no "
    "order (KS would depend on their alphabetical order): use psi, js or chi2"
)


class DriftGate(ApiModel):
    """The candidate's input or output distribution against a reference (docs/analysis.md).

    ``metric``: a histogram, compared bucket by bucket (``sum by (le)``);
    ``counter`` with ``by``: a counter, compared label value by label value.
    """

    model_config = cel_rules(
        (
            "has(self.metric) != has(self.counter)",
            "drift needs exactly one of metric (a histogram) or counter (with by)",
        ),
        ("has(self.counter) == has(self.by)", "drift over a counter needs by, and only then"),
        (
            "!has(self.counter) || !has(self.method) || self.method != 'ks'",
            KS_ON_CATEGORIES,
        ),
    )

    metric: MetricName | None = Field(
        default=None,
        description="Histogram name without _bucket, e.g. model_input_feature.",
    )
    counter: MetricName | None = Field(
        default=None,
        description="Counter whose label values are the categories, e.g. "
        "model_predictions_total (output drift over predicted classes).",
    )
    by: LabelName | None = Field(
        default=None, description="With counter: the label that holds the category, e.g. class."
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description="Extra label matchers, e.g. {feature: f0}; values may use template "
        "variables such as {{candidateVersion}}.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    method: Literal["psi", "js", "ks", "chi2"] = Field(
        default="psi",
        description="psi and js: gate with max. ks (histograms only): max on D, or min "
        "(a p-value method). chi2: min (a p-value method: fails when the distributions "
        "are shown to differ, passes when PSI is shown at most 0.1).",
    )
    against: Literal["stable", "baseline"] = Field(
        default="stable",
        description="stable: the stable version over the same window. baseline: the stable "
        "version over baselineWindow, baselineOffset ago.",
    )
    window: Duration | None = Field(
        default=None,
        description="Window of both distributions. Default: since the stage start (the "
        "sequential test's cumulative counts).",
    )
    baseline_window: Duration = Field(default="1h", description="Window of the baseline.")
    baseline_offset: Duration | None = Field(
        default=None, description="How long ago the baseline window ends. Default: now."
    )
    min_samples: int = Field(
        default=1000, ge=0, description="Observations needed on each side; fewer is inconclusive."
    )
    version_label: LabelName = Field(
        default="version", description="The label that tells the versions apart."
    )

    @model_validator(mode="after")
    def _one_distribution(self) -> DriftGate:
        if (self.metric is None) == (self.counter is None):
            raise ValueError("drift needs exactly one of metric (a histogram) or counter (with by)")
        if (self.counter is None) != (self.by is None):
            raise ValueError("drift over a counter needs by, and only then")
        if self.counter is not None and self.method == "ks":
            raise ValueError(KS_ON_CATEGORIES)
        for key in self.labels or {}:
            if not re.fullmatch(LABEL_NAME_PATTERN, key):
                raise ValueError(f"drift label {key!r} is not a Prometheus label name")
        return self


class AgreementGate(ApiModel):
    """Shadow agreement: an anytime-valid test of the share of paired answers that agree."""

    confidence: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="Kept for old manifests; unused: the test's level is the gate's share "
        "of analysis.falseRollbackBudget.",
    )
    max_unpaired_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Above this share of mirrored requests without a partner: inconclusive.",
    )
    min_pairs: int = Field(default=200, ge=1, description="Fewer pairs is inconclusive.")
    window: Duration | None = Field(default=None, description="Default: since the stage start.")
    comparisons: MetricName = Field(default="model_shadow_comparisons_total")
    unpaired: MetricName = Field(default="model_shadow_unpaired_total")


class CompareGate(ApiModel):
    """Candidate against stable on the same metric over the same time (docs/analysis.md).

    ``mannWhitney``: per-step values of ``query`` (Kayenta-style judge).
    ``msprt``: cumulative counters since the stage start, a sequential test that
    may be checked every interval.
    """

    model_config = cel_rules(
        (
            "self.mode != 'mannWhitney' || has(self.query)",
            "compare in mannWhitney mode needs query",
        ),
        (
            "self.mode != 'msprt' || ((has(self.successes) && has(self.trials)) != "
            "(has(self.count) && has(self.sum) && has(self.sumSquares)))",
            "compare in msprt mode needs successes and trials, or count, sum and sumSquares",
        ),
        ("self.mode != 'msprt' || has(self.tau)", "compare in msprt mode needs tau"),
    )

    mode: Literal["mannWhitney", "msprt"] = "mannWhitney"
    direction: HarmfulDirection = Field(
        description="Which change is harmful: increase, decrease or either."
    )
    query: str | None = Field(
        default=None,
        description="mannWhitney: PromQL template of one version ({{version}}), read per step.",
    )
    window: Duration | None = Field(
        default=None,
        description="mannWhitney: points from this long. Default: since the stage start.",
    )
    step: Duration = Field(default="30s", description="mannWhitney: one point per step.")
    confidence: float = Field(
        default=0.98,
        gt=0,
        lt=1,
        description="Kept for old manifests; unused: the level is the gate's share of "
        "analysis.falseRollbackBudget, spent over the stage's looks.",
    )
    effect_tolerance: float = Field(
        default=DEFAULT_EFFECT_TOLERANCE,
        ge=0,
        description="mannWhitney: passes once the shift is shown within this share of the "
        "stable median, fails once it is shown beyond it.",
    )
    min_points: int = Field(default=10, ge=1)
    successes: str | None = Field(
        default=None,
        description="msprt on a proportion: counter name (or PromQL template) of events, "
        "e.g. model_request_errors_total.",
    )
    trials: str | None = Field(default=None, description="msprt: counter of trials.")
    count: str | None = Field(default=None, description="msprt on a mean: observation count.")
    sum: str | None = Field(default=None, description="msprt on a mean: sum of observations.")
    sum_squares: str | None = Field(
        default=None, description="msprt on a mean: sum of squared observations."
    )
    tau: float | None = Field(
        default=None,
        gt=0,
        description="msprt: the smallest effect worth catching, in the "
        "units of the effect (e.g. 0.02 for an error rate).",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Kept for old manifests; unused: the level is the gate's share of "
        "analysis.falseRollbackBudget.",
    )
    burn_in: int = Field(default=100, ge=2, description="msprt: observations per version first.")

    @model_validator(mode="after")
    def _mode_fields(self) -> CompareGate:
        if self.mode == "mannWhitney" and self.query is None:
            raise ValueError("compare in mannWhitney mode needs query")
        if self.mode == "msprt":
            proportion = (self.successes, self.trials)
            mean = (self.count, self.sum, self.sum_squares)
            p_set, m_set = sum(x is not None for x in proportion), sum(x is not None for x in mean)
            if not ((p_set == 2 and m_set == 0) or (p_set == 0 and m_set == 3)):
                raise ValueError(
                    "compare in msprt mode needs successes and trials, or count, sum and sumSquares"
                )
            if self.tau is None:
                raise ValueError("compare in msprt mode needs tau")
        return self


class ScoreMetric(ApiModel):
    """One metric of a score: candidate against stable, Mann-Whitney on per-step values."""

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(description="PromQL template of one version ({{version}}).")
    direction: HarmfulDirection
    weight: float = Field(default=1.0, gt=0)
    critical: bool = Field(default=False, description="Failing it fails the score.")
    effect_tolerance: float = Field(default=DEFAULT_EFFECT_TOLERANCE, ge=0)


class ScoreGate(ApiModel):
    """Kayenta-style: a weighted share of metrics that did not get worse, 0-100."""

    model_config = cel_rules(
        ("self.marginal <= self.pass", "score needs marginal <= pass"),
        (
            "self.metrics.all(m, self.metrics.filter(n, n.name == m.name).size() == 1)",
            "score metric names must be unique",
        ),
    )

    metrics: list[ScoreMetric] = Field(min_length=1, max_length=16)
    pass_score: float = Field(default=95, ge=0, le=100, alias="pass")
    marginal: float = Field(
        default=75, ge=0, le=100, description="From here to pass: inconclusive (a human looks)."
    )
    window: Duration | None = Field(default=None, description="Default: since the stage start.")
    step: Duration = "30s"
    confidence: float = Field(
        default=0.98,
        gt=0,
        lt=1,
        description="Kept for old manifests; unused: the level is the gate's share of "
        "analysis.falseRollbackBudget, spent over the stage's looks.",
    )
    min_points: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _thresholds(self) -> ScoreGate:
        if self.marginal > self.pass_score:
            raise ValueError("score needs marginal <= pass")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("score metric names must be unique")
        return self


class AccuracyGate(ApiModel):
    """Late labels: the candidate's accuracy may be at most maxDrop below stable's."""

    min_labels: int = Field(
        default=500, ge=1, description="Labels per version needed; fewer is inconclusive."
    )
    max_drop: float = Field(default=0.02, ge=0, le=1)
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Kept for old manifests; unused: the level is the gate's share of "
        "analysis.falseRollbackBudget.",
    )
    window: Duration | None = Field(default=None, description="Default: since the stage start.")
    labelled: MetricName = Field(default="model_labelled_feedback_total")
    correct: MetricName = Field(default="model_correct_predictions_total")


class _LlmSelector(ApiModel):
    """Which series are the candidate's: vLLM labels ``model_name``; relabel as you scrape."""

    model_label: LabelName = Field(
        default="model",
        description="The label holding the model's name (vLLM's own is model_name; "
        "docs/analysis.md).",
    )
    version_label: LabelName = Field(
        default="version", description="The label that tells the versions apart."
    )


class LlmLatencyGate(_LlmSelector):
    """A quantile of an LLM server's latency histogram, judged on its bucket counts."""

    quantile: float = Field(default=0.95, gt=0, lt=1)
    metric: MetricName = Field(description="Histogram name without _bucket.")


class TimeToFirstTokenGate(LlmLatencyGate):
    """Time to first token (queue + prefill), per request."""

    metric: MetricName = Field(
        default="vllm:time_to_first_token_seconds", description="Histogram name without _bucket."
    )


class InterTokenLatencyGate(LlmLatencyGate):
    """Time between output tokens, per token (vLLM >= 0.11: vllm:inter_token_latency_seconds)."""

    metric: MetricName = Field(
        default="vllm:time_per_output_token_seconds",
        description="Histogram name without _bucket.",
    )


class QueueTimeGate(LlmLatencyGate):
    """Time a request waits before it is scheduled, per request."""

    metric: MetricName = Field(
        default="vllm:request_queue_time_seconds", description="Histogram name without _bucket."
    )


class OutputTokensGate(_LlmSelector):
    """Output (generated) tokens per second since the stage start."""

    metric: MetricName = Field(
        default="vllm:generation_tokens_total", description="Counter of generated tokens."
    )


class KvCacheUsageGate(_LlmSelector):
    """The KV-cache usage gauge (0-1), its highest value over each check's interval."""

    metric: MetricName = Field(
        default="vllm:gpu_cache_usage_perc",
        description="Gauge of the used share of the KV cache (vLLM >= 0.10: "
        "vllm:kv_cache_usage_perc).",
    )


class CostPerThousandTokensGate(OutputTokensGate):
    """What the candidate's GPUs cost per 1,000 output tokens: price x GPUs / (tokens/h / 1000)."""

    price_per_gpu_hour: float = Field(gt=0, description="Price of one GPU for one hour.")
    gpus: float = Field(
        default=1, gt=0, description="GPUs serving the candidate (all its replicas together)."
    )


_KINDS_TEXT = (
    "query, latency, errorRate, throughput, nullRate, drift, agreement, compare, score, "
    "accuracy, timeToFirstToken, interTokenLatency, queueTime, outputTokensPerSecond, "
    "kvCacheUsage, costPerThousandTokens"
)

_LLM_MAX = (
    "timeToFirstToken, interTokenLatency, queueTime, kvCacheUsage and costPerThousandTokens "
    "need max (and no min)"
)
_LLM_MIN = "outputTokensPerSecond needs min (and no max)"


class MetricGate(ApiModel):
    """One gate: a value from Prometheus compared with min and/or max.

    The value comes from exactly one source: a PromQL ``query`` template, a
    built-in threshold (``latency``, ``errorRate``, ``throughput``, ``nullRate``)
    that needs no PromQL, an LLM serving gate (``timeToFirstToken``,
    ``interTokenLatency``, ``queueTime``, ``outputTokensPerSecond``, ``kvCacheUsage``,
    ``costPerThousandTokens``, on vLLM's metric names), or an ML judge (``drift``,
    ``agreement``, ``compare``, ``score``, ``accuracy``; docs/analysis.md).
    ``compare``, ``score`` and ``accuracy`` carry their own limits and take no min or max.
    """

    model_config = cel_rules(
        (
            "[has(self.query), has(self.latency), has(self.errorRate), has(self.throughput), "
            "has(self.nullRate), has(self.drift), has(self.agreement), has(self.compare), "
            "has(self.score), has(self.accuracy), has(self.timeToFirstToken), "
            "has(self.interTokenLatency), has(self.queueTime), has(self.outputTokensPerSecond), "
            "has(self.kvCacheUsage), has(self.costPerThousandTokens)].filter(x, x).size() == 1",
            f"a gate needs exactly one of {_KINDS_TEXT}",
        ),
        (
            "has(self.compare) || has(self.score) || has(self.accuracy) || "
            "has(self.min) || has(self.max)",
            "a gate needs min or max",
        ),
        (
            "!(has(self.compare) || has(self.score) || has(self.accuracy)) || "
            "!(has(self.min) || has(self.max))",
            "compare, score and accuracy gates set their own limits: leave out min and max",
        ),
        (
            "!has(self.drift) || (self.drift.method == 'chi2' ? has(self.min) && !has(self.max) "
            ": self.drift.method == 'ks' ? has(self.min) != has(self.max) "
            ": has(self.max) && !has(self.min))",
            "drift psi and js need max; ks needs max (on D) or min (on the p-value); "
            "chi2 needs min (on the p-value)",
        ),
        (
            "!(has(self.timeToFirstToken) || has(self.interTokenLatency) || has(self.queueTime) "
            "|| has(self.kvCacheUsage) || has(self.costPerThousandTokens)) "
            "|| (has(self.max) && !has(self.min))",
            _LLM_MAX,
        ),
        ("!has(self.outputTokensPerSecond) || (has(self.min) && !has(self.max))", _LLM_MIN),
    )

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str | None = Field(
        default=None,
        description="PromQL template; {{model}} {{namespace}} {{version}} {{role}} "
        "{{interval}} {{stableVersion}} {{candidateVersion}} are filled in.",
    )
    latency: LatencyGate | None = None
    error_rate: CounterGate | None = None
    throughput: CounterGate | None = None
    null_rate: CounterGate | None = Field(
        default=None, description="Null outputs / requests (model_null_outputs_total)."
    )
    drift: DriftGate | None = None
    agreement: AgreementGate | None = None
    compare: CompareGate | None = None
    score: ScoreGate | None = None
    accuracy: AccuracyGate | None = None
    time_to_first_token: TimeToFirstTokenGate | None = Field(
        default=None, description="LLM: a quantile of time to first token, in seconds (max)."
    )
    inter_token_latency: InterTokenLatencyGate | None = Field(
        default=None, description="LLM: a quantile of the time between tokens, in seconds (max)."
    )
    queue_time: QueueTimeGate | None = Field(
        default=None, description="LLM: a quantile of the scheduler queue time, in seconds (max)."
    )
    output_tokens_per_second: OutputTokensGate | None = Field(
        default=None, description="LLM: generated tokens per second (min)."
    )
    kv_cache_usage: KvCacheUsageGate | None = Field(
        default=None, description="LLM: the KV-cache usage gauge, 0-1 (max)."
    )
    cost_per_thousand_tokens: CostPerThousandTokensGate | None = Field(
        default=None,
        description="LLM: GPU cost per 1,000 output tokens, from pricePerGpuHour (max).",
    )
    min: float | None = None
    max: float | None = None
    min_samples: int | None = Field(
        default=None,
        ge=1,
        description="Requests to the candidate (model_requests_total) needed in the gate's "
        "window; fewer is inconclusive.",
    )
    on_inconclusive: InconclusivePolicy = Field(default=InconclusivePolicy.HOLD)
    stages: list[Stage] | None = Field(
        default=None,
        description="Stages in which this gate is checked. Default: every stage in which "
        "the candidate receives traffic, up to the promotion. rollbackWindow: checked after "
        "the promotion while spec.rollbackWindow lasts, where failureLimit failed checks in "
        "a row undo the promotion; only gates that list it are checked there.",
    )

    @model_validator(mode="after")
    def _one_source_and_a_limit(self) -> MetricGate:
        sources = (
            self.query,
            self.latency,
            self.error_rate,
            self.throughput,
            self.null_rate,
            self.drift,
            self.agreement,
            self.compare,
            self.score,
            self.accuracy,
            self.time_to_first_token,
            self.inter_token_latency,
            self.queue_time,
            self.output_tokens_per_second,
            self.kv_cache_usage,
            self.cost_per_thousand_tokens,
        )
        if sum(x is not None for x in sources) != 1:
            raise ValueError(f"gate {self.name!r} needs exactly one of {_KINDS_TEXT}")
        own_limits = any(x is not None for x in (self.compare, self.score, self.accuracy))
        has_limit = self.min is not None or self.max is not None
        if own_limits and has_limit:
            raise ValueError(
                f"gate {self.name!r}: compare, score and accuracy gates set their own limits: "
                "leave out min and max"
            )
        if not own_limits and not has_limit:
            raise ValueError(f"gate {self.name!r} needs min or max")
        lo_set, hi_set = self.min is not None, self.max is not None
        capped = (
            self.time_to_first_token,
            self.inter_token_latency,
            self.queue_time,
            self.kv_cache_usage,
            self.cost_per_thousand_tokens,
        )
        if any(x is not None for x in capped) and not (hi_set and not lo_set):
            raise ValueError(f"gate {self.name!r}: {_LLM_MAX}")
        if self.output_tokens_per_second is not None and not (lo_set and not hi_set):
            raise ValueError(f"gate {self.name!r}: {_LLM_MIN}")
        if self.drift is not None:
            method, lo, hi = self.drift.method, self.min is not None, self.max is not None
            ok = (
                (lo and not hi)
                if method == "chi2"
                else (lo != hi)
                if method == "ks"
                else (hi and not lo)
            )
            if not ok:
                raise ValueError(
                    f"gate {self.name!r}: drift psi and js need max; ks needs max (on D) or "
                    "min (on the p-value); chi2 needs min (on the p-value)"
                )
        return self
