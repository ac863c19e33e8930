"""The ModelRollout API: pydantic models that are the single source of the CRD.

Everything a user writes (``spec``) and everything the operator records
(``status``) is declared here. ``modelrollout.api.crd`` turns these models into
the CustomResourceDefinition under ``crds/``; a test fails when the two
disagree, so the schema the API server enforces is always the one the code
reads.

Field names are camelCase on the wire (as Kubernetes users expect) and
snake_case in Python; ``populate_by_name`` lets either form in.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ["mro"]

#: Go-style durations as users write them: ``30s``, ``10m``, ``1h30m``, ``500ms``.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "10m", "1h30m"])]
Percent = Annotated[int, Field(ge=0, le=100)]


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string; ``ValueError`` when it is not one."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use forms like 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _cel(*rules: tuple[str, str]) -> ConfigDict:
    """Cross-field rules for the API server, as CEL, next to the Python rule they mirror."""
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]
        }
    )


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ------------------------------------------------------------------------- enums


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
    """Analysis or a human sent all traffic back to stable."""
    FAILED = "Failed"
    """The rollout cannot run as written (bad spec, missing route); traffic stays on stable."""


class Stage(StrEnum):
    """The part of the strategy in progress."""

    SHADOW = "shadow"
    CANARY = "canary"
    PREVIEW = "preview"
    """Blue-green: the candidate is judged before the switch."""
    POST_PROMOTION = "postPromotion"
    """Blue-green: switched; the old version still warm."""
    DONE = "done"


class Verdict(StrEnum):
    """The outcome of one gate in one check; measurement failures are values, not errors."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    """No data, NaN, an empty or a multi-series result, or the source is unreachable."""


# --------------------------------------------------------------------------- spec


class VersionRef(_Model):
    """One version of the model and the Service that serves it."""

    version: str = Field(min_length=1, max_length=63, description="Version label, e.g. v2.")
    service: str | None = Field(
        default=None,
        description="Service that serves this version. Default: spec.serviceTemplate.",
    )
    deployment: str | None = Field(
        default=None,
        description="Deployment of this version (service router only). "
        "Default: spec.deploymentTemplate.",
    )


class GatewayAPIRouting(_Model):
    """A Gateway API HTTPRoute: backendRef weights; a RequestMirror filter for shadow."""

    http_route: str = Field(min_length=1, description="HTTPRoute in the rollout's namespace.")
    rule: str | None = Field(
        default=None,
        description="Name of the rule that belongs to the model. Default: the rule whose "
        "backendRefs name the stable or candidate Service.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="backendRef port.")


class IstioRouting(_Model):
    """An Istio VirtualService: route weights; mirror and mirrorPercentage for shadow."""

    virtual_service: str = Field(min_length=1)
    route: str | None = Field(
        default=None,
        description="Name of the http route that belongs to the model. Default: the route "
        "whose destinations name the stable or candidate Service.",
    )
    port: int | None = Field(default=None, ge=1, le=65535)


class ServiceRouting(_Model):
    """A plain Service, no mesh.

    Blue-green switches the Service's selector between versions. A canary is
    carried by the replica ratio of the two Deployments while the selector
    spans both versions, so its weights are approximate (status says so).
    """

    name: str = Field(min_length=1)
    version_label: str = Field(
        default="version", description="Pod label that tells the versions apart."
    )


class TrafficRouting(_Model):
    """Exactly one router."""

    model_config = _cel(
        (
            "[has(self.gatewayAPI), has(self.istio), has(self.service)].filter(x, x).size() == 1",
            "trafficRouting needs exactly one of gatewayAPI, istio, service",
        )
    )

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    istio: IstioRouting | None = None
    service: ServiceRouting | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        set_ = [n for n in ("gateway_api", "istio", "service") if getattr(self, n) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"trafficRouting needs exactly one of gatewayAPI, istio, service (got {len(set_)})"
            )
        return self

    @property
    def kind(self) -> str:
        if self.gateway_api is not None:
            return "gatewayAPI"
        if self.istio is not None:
            return "istio"
        return "service"


class ShadowStrategy(_Model):
    """Mirror a share of live requests to the candidate; its answers never reach users."""

    mirror_percent: Percent = Field(default=100)
    duration: Duration = Field(default="10m")


class PauseStep(_Model):
    duration: Duration | None = Field(
        default=None, description="Wait this long. No duration: a human gate (promote to pass)."
    )


class AnalysisStep(_Model):
    checks: int = Field(
        default=1, ge=1, le=100, description="Hold until this many checks in a row pass."
    )


class CanaryStep(_Model):
    """One step: exactly one of setWeight, pause, analysis."""

    model_config = _cel(
        (
            "[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            "a canary step needs exactly one of setWeight, pause, analysis",
        )
    )

    set_weight: Percent | None = None
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        n = sum(x is not None for x in (self.set_weight, self.pause, self.analysis))
        if n != 1:
            raise ValueError("a canary step needs exactly one of setWeight, pause, analysis")
        return self


class CanaryStrategy(_Model):
    steps: list[CanaryStep] = Field(min_length=1, max_length=50)


class BlueGreenStrategy(_Model):
    """Preview, judge, switch all traffic at once, keep the old version warm."""

    preview_duration: Duration = Field(
        default="5m", description="How long the candidate is judged on preview traffic."
    )
    preview_weight: Percent = Field(
        default=0,
        description="Share of live traffic the preview gets (0: only mirrored traffic "
        "and direct preview requests).",
    )
    preview_mirror_percent: Percent = Field(
        default=0, description="Share of live traffic mirrored to the preview."
    )
    auto_promote: bool = Field(
        default=True, description="Switch when pre-promotion analysis passes; false: a human."
    )
    post_promotion_duration: Duration = Field(
        default="5m", description="How long the new active version is judged after the switch."
    )
    scale_down_delay: Duration = Field(
        default="10m",
        description="How long the old version keeps serving capacity after the switch, "
        "so a rollback is instant.",
    )


class Strategy(_Model):
    model_config = _cel(
        (
            "has(self.canary) != has(self.blueGreen)",
            "strategy needs exactly one of canary, blueGreen",
        )
    )

    shadow: ShadowStrategy | None = None
    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Strategy:
        if (self.canary is None) == (self.blue_green is None):
            raise ValueError("strategy needs exactly one of canary, blueGreen")
        return self


class InconclusivePolicy(StrEnum):
    """What a check that could not be measured leads to."""

    HOLD = "Hold"
    """Count it towards inconclusiveLimit; at the limit, pause for a human."""
    FAIL = "Fail"
    """Count it as a failed check."""
    IGNORE = "Ignore"
    """Leave it out of the verdict (the ledger still shows it)."""


class LatencyGate(_Model):
    quantile: float = Field(default=0.99, gt=0, lt=1)
    metric: str = Field(default="model_request_duration_seconds")


class CounterGate(_Model):
    metric: str | None = Field(
        default=None, description="Override the counter's name (defaults by gate kind)."
    )


#: Prometheus metric and label names, for the names a gate puts into PromQL itself.
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
MetricName = Annotated[str, Field(pattern=METRIC_NAME_PATTERN, max_length=200)]
LabelName = Annotated[str, Field(pattern=LABEL_NAME_PATTERN, max_length=100)]
HarmfulDirection = Literal["increase", "decrease", "either"]


class DriftGate(_Model):
    """The candidate's input or output distribution against a reference (docs/analysis.md).

    ``metric``: a histogram, compared bucket by bucket (``sum by (le)``);
    ``counter`` with ``by``: a counter, compared label value by label value.
    """

    model_config = _cel(
        (
            "has(self.metric) != has(self.counter)",
            "drift needs exactly one of metric (a histogram) or counter (with by)",
        ),
        ("has(self.counter) == has(self.by)", "drift over a counter needs by, and only then"),
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
        description="psi and js: gate with max. ks: max on D, or min on the p-value. "
        "chi2: min on the p-value.",
    )
    against: Literal["stable", "baseline"] = Field(
        default="stable",
        description="stable: the stable version over the same window. baseline: the stable "
        "version over baselineWindow, baselineOffset ago.",
    )
    window: Duration | None = Field(
        default=None, description="Window of both distributions. Default: analysis.interval."
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
        for key in self.labels or {}:
            if not re.fullmatch(LABEL_NAME_PATTERN, key):
                raise ValueError(f"drift label {key!r} is not a Prometheus label name")
        return self


class AgreementGate(_Model):
    """Shadow agreement: the Wilson lower bound of the share of paired answers that agree."""

    confidence: float = Field(default=0.95, gt=0, lt=1)
    max_unpaired_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Above this share of mirrored requests without a partner: inconclusive.",
    )
    min_pairs: int = Field(default=200, ge=1, description="Fewer pairs is inconclusive.")
    window: Duration | None = Field(default=None, description="Default: analysis.interval.")
    comparisons: MetricName = Field(default="model_shadow_comparisons_total")
    unpaired: MetricName = Field(default="model_shadow_unpaired_total")


class CompareGate(_Model):
    """Candidate against stable on the same metric over the same time (docs/analysis.md).

    ``mannWhitney``: per-step values of ``query`` (Kayenta-style judge).
    ``msprt``: cumulative counters since the stage start, a sequential test that
    may be checked every interval.
    """

    model_config = _cel(
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
    confidence: float = Field(default=0.98, gt=0, lt=1)
    effect_tolerance: float = Field(
        default=0.25,
        ge=0,
        description="mannWhitney: shifts within this share of the stable median pass.",
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
    alpha: float = Field(default=0.05, gt=0, lt=1)
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


class ScoreMetric(_Model):
    """One metric of a score: candidate against stable, Mann-Whitney on per-step values."""

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(description="PromQL template of one version ({{version}}).")
    direction: HarmfulDirection
    weight: float = Field(default=1.0, gt=0)
    critical: bool = Field(default=False, description="Failing it fails the score.")
    effect_tolerance: float = Field(default=0.25, ge=0)


class ScoreGate(_Model):
    """Kayenta-style: a weighted share of metrics that did not get worse, 0-100."""

    model_config = _cel(
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
    confidence: float = Field(default=0.98, gt=0, lt=1)
    min_points: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _thresholds(self) -> ScoreGate:
        if self.marginal > self.pass_score:
            raise ValueError("score needs marginal <= pass")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("score metric names must be unique")
        return self


class AccuracyGate(_Model):
    """Late labels: the candidate's accuracy may be at most maxDrop below stable's."""

    min_labels: int = Field(
        default=500, ge=1, description="Labels per version needed; fewer is inconclusive."
    )
    max_drop: float = Field(default=0.02, ge=0, le=1)
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="One-sided, of the difference's bounds."
    )
    window: Duration | None = Field(default=None, description="Default: since the stage start.")
    labelled: MetricName = Field(default="model_labelled_feedback_total")
    correct: MetricName = Field(default="model_correct_predictions_total")


class MetricGate(_Model):
    """One gate: a value from Prometheus compared with min and/or max.

    The value comes from exactly one source: a PromQL ``query`` template, a
    built-in threshold (``latency``, ``errorRate``, ``throughput``, ``nullRate``)
    that needs no PromQL, or an ML judge (``drift``, ``agreement``, ``compare``,
    ``score``, ``accuracy``; docs/analysis.md). ``compare``, ``score`` and
    ``accuracy`` carry their own limits and take no min or max.
    """

    model_config = _cel(
        (
            "[has(self.query), has(self.latency), has(self.errorRate), has(self.throughput), "
            "has(self.nullRate), has(self.drift), has(self.agreement), has(self.compare), "
            "has(self.score), has(self.accuracy)].filter(x, x).size() == 1",
            "a gate needs exactly one of query, latency, errorRate, throughput, nullRate, "
            "drift, agreement, compare, score, accuracy",
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
        "the candidate receives traffic.",
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
        )
        if sum(x is not None for x in sources) != 1:
            raise ValueError(
                f"gate {self.name!r} needs exactly one of query, latency, errorRate, "
                "throughput, nullRate, drift, agreement, compare, score, accuracy"
            )
        own_limits = any(x is not None for x in (self.compare, self.score, self.accuracy))
        has_limit = self.min is not None or self.max is not None
        if own_limits and has_limit:
            raise ValueError(
                f"gate {self.name!r}: compare, score and accuracy gates set their own limits: "
                "leave out min and max"
            )
        if not own_limits and not has_limit:
            raise ValueError(f"gate {self.name!r} needs min or max")
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


class PrometheusSource(_Model):
    address: str | None = Field(
        default=None, description="Prometheus URL. Default: the operator's --prometheus."
    )


class Analysis(_Model):
    interval: Duration = Field(default="1m", description="Time between checks; also {{interval}}.")
    failure_limit: int = Field(
        default=2, ge=1, le=100, description="Failed checks in a row that roll back."
    )
    inconclusive_limit: int = Field(
        default=3, ge=1, le=100, description="Inconclusive checks in a row that pause."
    )
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)
    metrics: list[MetricGate] = Field(default_factory=list, max_length=32)


class Automation(StrEnum):
    """How far the rollout goes on its own."""

    FULL = "Full"
    """Runs from shadow to promotion with no human, stopping only at untimed pauses."""
    AFTER_SHADOW = "AfterShadow"
    """Stops after shadow for a human to let live traffic in."""
    BEFORE_PROMOTION = "BeforePromotion"
    """Asks for approval only before the final promotion."""
    EVERY_STEP = "EveryStep"
    """Asks for approval before every weight increase and the promotion."""


class ModelRolloutSpec(_Model):
    model_config = _cel(
        (
            "!(has(self.trafficRouting.service) && has(self.strategy.shadow))",
            "shadow needs a router that can mirror (gatewayAPI or istio); a plain Service cannot",
        )
    )

    model: str = Field(min_length=1, max_length=63, description="Model name, {{model}}.")
    stable: VersionRef | None = Field(
        default=None,
        description="The version serving now. Read once to seed status.stable; after that "
        "the operator keeps track of the stable version itself.",
    )
    candidate: VersionRef
    service_template: str = Field(
        default="{model}-{version}", description="Service name of a version."
    )
    deployment_template: str = Field(
        default="{model}-{version}", description="Deployment name of a version."
    )
    traffic_routing: TrafficRouting
    strategy: Strategy
    analysis: Analysis = Field(default_factory=Analysis)
    automation: Automation = Field(default=Automation.FULL)
    paused: bool = Field(default=False, description="Hold the rollout where it is.")

    @model_validator(mode="after")
    def _router_supports_strategy(self) -> ModelRolloutSpec:
        if self.traffic_routing.service is not None and self.strategy.shadow is not None:
            raise ValueError(
                "shadow needs a router that can mirror (gatewayAPI or istio); "
                "a plain Service cannot"
            )
        return self

    def service_for(self, ref: VersionRef) -> str:
        return ref.service or self.service_template.format(model=self.model, version=ref.version)

    def deployment_for(self, ref: VersionRef) -> str:
        return ref.deployment or self.deployment_template.format(
            model=self.model, version=ref.version
        )


# ------------------------------------------------------------------------- status


class Weights(_Model):
    stable: Percent = 100
    candidate: Percent = 0


class GateResult(_Model):
    metric: str
    value: float | None = None
    min: float | None = None
    max: float | None = None
    verdict: Verdict
    reason: str | None = None
    samples: float | None = None
    needed_samples: float | None = None

    @property
    def limit_text(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


class AnalysisRun(_Model):
    at: str
    stage: Stage
    step_index: int | None = None
    verdict: Verdict
    results: list[GateResult] = Field(default_factory=list)


class HistoryEntry(_Model):
    at: str
    phase: Phase
    stage: Stage
    step_index: int | None = None
    weight: Percent = 0
    mirror_percent: Percent = 0
    reason: str
    message: str | None = None
    candidate_version: str | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ModelRolloutStatus(_Model):
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
    stage_started_at: str | None = None
    step_started_at: str | None = None
    last_check_at: str | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    consecutive_passes: int = 0
    pause_reason: str | None = None
    awaiting_approval: str | None = None
    approved_gate: str | None = None
    aborted: bool | None = None
    handled_request: str | None = None
    scale_down_at: str | None = None
    last_analysis: AnalysisRun | None = None
    analysis_ledger: list[AnalysisRun] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str | None = None


class ModelRollout(_Model):
    """A whole object, as read from the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=f"{GROUP}/{VERSION}")
    kind: Literal["ModelRollout"] = "ModelRollout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = Field(default_factory=ModelRolloutStatus)
