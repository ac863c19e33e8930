"""The ModelRollout's spec: the model, its versions, the route, the strategy, the analysis.

Everything here is written by a tenant and treated as hostile input: the models
refuse what cannot run, and the same rules travel to the API server as CEL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.base import GROUP, VERSION, ApiModel, Duration, Percent, cel_rules
from modelrollout.api.gates import MetricGate
from modelrollout.api.notifications import Notification
from modelrollout.api.status import ModelRolloutStatus, Stage


class VersionRef(ApiModel):
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


class GatewayAPIRouting(ApiModel):
    """A Gateway API HTTPRoute: backendRef weights; a RequestMirror filter for shadow."""

    http_route: str = Field(min_length=1, description="HTTPRoute in the rollout's namespace.")
    rule: str | None = Field(
        default=None,
        description="Name of the rule that belongs to the model. Default: the rule whose "
        "backendRefs name the stable or candidate Service.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="backendRef port.")


class IstioRouting(ApiModel):
    """An Istio VirtualService: route weights; mirror and mirrorPercentage for shadow."""

    virtual_service: str = Field(min_length=1)
    route: str | None = Field(
        default=None,
        description="Name of the http route that belongs to the model. Default: the route "
        "whose destinations name the stable or candidate Service.",
    )
    port: int | None = Field(default=None, ge=1, le=65535)


#: Why a kserve router needs a template, in both checks.
KSERVE_NO_TEMPLATE = (
    "kserve needs at least one of storageUriTemplate, runtimeVersionTemplate, imageTemplate: "
    "the predictor fields that tell the versions apart"
)

#: Why a KServe InferenceService cannot take a shadow stage, in both checks.
KSERVE_NO_MIRROR = (
    "KServe cannot mirror traffic to a candidate: shadow needs gatewayAPI or istio "
    "(e.g. one InferenceService per version behind an HTTPRoute); drop strategy.shadow "
    "and blueGreen.previewMirrorPercent with trafficRouting.kserve"
)


class ServiceRouting(ApiModel):
    """A plain Service, no mesh.

    Blue-green switches the Service's selector between versions. A canary is
    carried by the replica ratio of the two Deployments while the selector
    spans both versions, so its weights are approximate (status says so).
    """

    name: str = Field(min_length=1)
    version_label: str = Field(
        default="version", description="Pod label that tells the versions apart."
    )


class KServeRouting(ApiModel):
    """A KServe InferenceService (Serverless mode): one predictor spec, a canary by percent.

    The candidate is the predictor's spec with the templated fields rendered for
    the candidate's version; its share is ``spec.predictor.canaryTrafficPercent``,
    and KServe keeps the last rolled-out revision serving the rest. Promotion
    drops the percent (KServe rolls the new revision out at 100%); a rollback
    sets it to 0 (KServe sends everything back to the last rolled-out
    revision, still warm). KServe cannot mirror, so shadow is refused. In
    RawDeployment mode KServe ignores ``canaryTrafficPercent``: use one
    InferenceService per version behind an HTTPRoute (``gatewayAPI`` with
    ``serviceTemplate: "{model}-{version}-predictor"``) instead.
    """

    model_config = cel_rules(
        (
            "has(self.storageUriTemplate) || has(self.runtimeVersionTemplate) "
            "|| has(self.imageTemplate)",
            KSERVE_NO_TEMPLATE,
        )
    )

    inference_service: str = Field(
        min_length=1, max_length=253, description="InferenceService in the rollout's namespace."
    )
    storage_uri_template: str | None = Field(
        default=None,
        min_length=1,
        description="spec.predictor.model.storageUri of a version, e.g. "
        "gs://models/fraud/{version}. {model} and {version} are replaced.",
    )
    runtime_version_template: str | None = Field(
        default=None,
        min_length=1,
        description="spec.predictor.model.runtimeVersion of a version, e.g. 1.5-{version}.",
    )
    image_template: str | None = Field(
        default=None,
        min_length=1,
        description="Image of a version: spec.predictor.model.image, or that of the first "
        "container of a custom predictor (spec.predictor.containers[0].image).",
    )

    version_label: str | None = Field(
        default="version",
        max_length=63,
        pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$",
        description="Pod label (spec.predictor.labels) that carries the version, so the "
        "metrics scraped from the predictor's pods can be told apart. Empty: none.",
    )

    @model_validator(mode="after")
    def _some_template(self) -> KServeRouting:
        if not (self.storage_uri_template or self.runtime_version_template or self.image_template):
            raise ValueError(KSERVE_NO_TEMPLATE)
        return self


def _one_router_cel(schema: dict[str, Any], model: type[Any]) -> None:
    rule, message = model.exactly_one()
    schema["x-kubernetes-validations"] = [{"rule": rule, "message": message}]


class TrafficRouting(ApiModel):
    """Exactly one router."""

    # The docstring is the CRD's description. Each field is one router's settings,
    # and its wire name is that router's kind (modelrollout.traffic.registry pairs
    # them up). The exactly-one rule, here and as CEL in the CRD, follows the
    # fields: a new router is a new field and nothing else here.
    model_config = ConfigDict(json_schema_extra=_one_router_cel)

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    istio: IstioRouting | None = None
    service: ServiceRouting | None = None
    kserve: KServeRouting | None = None

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """The routers' kinds: the fields' wire names, in order."""
        return tuple(f.alias or name for name, f in cls.model_fields.items())

    @classmethod
    def exactly_one(cls) -> tuple[str, str]:
        """The exactly-one rule as CEL, and the message both checks give."""
        kinds = cls.kinds()
        rule = f"[{', '.join(f'has(self.{k})' for k in kinds)}].filter(x, x).size() == 1"
        return rule, f"trafficRouting needs exactly one of {', '.join(kinds)}"

    def _chosen(self) -> list[tuple[str, ApiModel]]:
        return [
            (field.alias or name, value)
            for name, field in type(self).model_fields.items()
            if (value := getattr(self, name)) is not None
        ]

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        chosen = self._chosen()
        if len(chosen) != 1:
            raise ValueError(f"{self.exactly_one()[1]} (got {len(chosen)})")
        return self

    @property
    def kind(self) -> str:
        """The chosen router's kind, e.g. ``gatewayAPI``."""
        return self._chosen()[0][0]

    @property
    def settings(self) -> ApiModel:
        """The chosen router's settings."""
        return self._chosen()[0][1]


class ShadowStrategy(ApiModel):
    """Mirror a share of live requests to the candidate; its answers never reach users."""

    mirror_percent: Percent = Field(default=100)
    duration: Duration = Field(default="10m")


class PauseStep(ApiModel):
    duration: Duration | None = Field(
        default=None, description="Wait this long. No duration: a human gate (promote to pass)."
    )


class AnalysisStep(ApiModel):
    checks: int = Field(
        default=1, ge=1, le=100, description="Hold until this many checks in a row pass."
    )


class CanaryStep(ApiModel):
    """One step: exactly one of setWeight, pause, analysis."""

    model_config = cel_rules(
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


class CanaryStrategy(ApiModel):
    steps: list[CanaryStep] = Field(min_length=1, max_length=50)


class BlueGreenStrategy(ApiModel):
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


class Strategy(ApiModel):
    model_config = cel_rules(
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


class PrometheusSource(ApiModel):
    address: str | None = Field(
        default=None, description="Prometheus URL. Default: the operator's --prometheus."
    )


class Analysis(ApiModel):
    interval: Duration = Field(default="1m", description="Time between checks; also {{interval}}.")
    failure_limit: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Failed checks in a row that roll back. Every gate is an anytime-valid "
        "test, so one Fail is already a claim at the rollout's falseRollbackBudget: 1 is "
        "enough (docs/analysis.md).",
    )
    inconclusive_limit: int = Field(
        default=3, ge=1, le=100, description="Inconclusive checks in a row that pause."
    )
    false_rollback_budget: float = Field(
        default=0.01,
        gt=0,
        le=0.2,
        description="The chance, over the whole rollout, that a candidate which holds every "
        "limit is rolled back (and that one breaking a limit is shown good). Split evenly "
        "over the gates of every stage; docs/analysis.md says how.",
    )
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)
    metrics: list[MetricGate] = Field(default_factory=list, max_length=32)

    def tests_per_rollout(self, stages: list[Stage]) -> int:
        """How many sequential tests share the budget: each gate once in each of ``stages``
        where it is checked (at least 1)."""
        return max(
            1, sum(1 for s in stages for g in self.metrics if g.stages is None or s in g.stages)
        )


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


class ModelRolloutSpec(ApiModel):
    model_config = cel_rules(
        (
            "!(has(self.trafficRouting.service) && has(self.strategy.shadow))",
            "shadow needs a router that can mirror (gatewayAPI or istio); a plain Service cannot",
        ),
        (
            "!has(self.trafficRouting.kserve) || !(has(self.strategy.shadow) || "
            "(has(self.strategy.blueGreen) && has(self.strategy.blueGreen.previewMirrorPercent) "
            "&& self.strategy.blueGreen.previewMirrorPercent > 0))",
            KSERVE_NO_MIRROR,
        ),
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
    notifications: list[Notification] | None = Field(
        default=None,
        max_length=10,
        description="Receivers of this rollout's decisions; their URLs and signing keys are "
        "keys of Secret modelrollout-notifications in this namespace. Unset: the operator's "
        "default receivers (--notifications-file); an empty list: none.",
    )
    rollback_window: Duration | None = Field(
        default=None,
        description="How long after a promotion the previous version stays deployed and "
        "routable, so `kubectl modelrollout undo` (or a failed gate that lists the stage "
        "rollbackWindow) sends all traffic back to it in one route write. Default: no window.",
    )

    @model_validator(mode="after")
    def _router_supports_strategy(self) -> ModelRolloutSpec:
        if self.traffic_routing.service is not None and self.strategy.shadow is not None:
            raise ValueError(
                "shadow needs a router that can mirror (gatewayAPI or istio); "
                "a plain Service cannot"
            )
        if self.traffic_routing.kserve is not None:
            bg = self.strategy.blue_green
            if self.strategy.shadow is not None or (bg is not None and bg.preview_mirror_percent):
                raise ValueError(KSERVE_NO_MIRROR)
        return self

    def stages(self) -> list[Stage]:
        """The stages this strategy runs through in which the candidate gets traffic."""
        first = [Stage.SHADOW] if self.strategy.shadow is not None else []
        if self.strategy.canary is not None:
            return [*first, Stage.CANARY]
        return [*first, Stage.PREVIEW, Stage.POST_PROMOTION]

    def alpha_per_test(self) -> float:
        """Each (gate, stage) test's share of ``analysis.falseRollbackBudget`` (Bonferroni)."""
        budget = self.analysis.false_rollback_budget
        return budget / self.analysis.tests_per_rollout(self.stages())

    def version_ref(self, version: str) -> VersionRef:
        """The spec's own reference to a version (with its names), else a bare one."""
        for ref in (self.candidate, self.stable):
            if ref is not None and ref.version == version:
                return ref
        return VersionRef(version=version)

    def service_for(self, ref: VersionRef) -> str:
        return ref.service or self.service_template.format(model=self.model, version=ref.version)

    def deployment_for(self, ref: VersionRef) -> str:
        return ref.deployment or self.deployment_template.format(
            model=self.model, version=ref.version
        )


class ModelRollout(ApiModel):
    """A whole object, as read from the API server."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=f"{GROUP}/{VERSION}")
    kind: Literal["ModelRollout"] = "ModelRollout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = Field(default_factory=ModelRolloutStatus)
