"""A small harness that drives the pure engine tick by tick, as the operator would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import GateResult, ModelRolloutStatus, Verdict
from modelrollout.engine import (
    Decision,
    Observations,
    Preflight,
    Request,
    RequestVerb,
    TrafficState,
    decide,
    plan,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)


#: A blue-green strategy with every stage timed, shared by the engine and wake tests.
BLUE_GREEN: dict[str, Any] = {
    "blueGreen": {
        "previewDuration": "1m",
        "previewMirrorPercent": 100,
        "postPromotionDuration": "2m",
        "scaleDownDelay": "10m",
    }
}


def make_spec(**overrides: Any) -> ModelRolloutSpec:
    base: dict[str, Any] = {
        "model": "fraud-detector",
        "stable": {"version": "v1"},
        "candidate": {"version": "v2"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-detector"}},
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "1m"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "1m"}},
                ]
            }
        },
        "analysis": {
            "interval": "30s",
            "failureLimit": 2,
            "inconclusiveLimit": 2,
            "metrics": [{"name": "p99-latency", "latency": {}, "max": 0.5}],
        },
    }
    base.update(overrides)
    return ModelRolloutSpec.model_validate(base)


def gate(verdict: Verdict, value: float | None = 0.1, name: str = "p99-latency") -> GateResult:
    return GateResult(metric=name, value=value, max=0.5, verdict=verdict)


PASS = [gate(Verdict.PASS)]
FAIL = [gate(Verdict.FAIL, 0.9)]
NODATA = [gate(Verdict.INCONCLUSIVE, None)]


@dataclass
class Sim:
    """Drives decide() like the operator's timer: the route always holds the intent."""

    spec: ModelRolloutSpec
    now: datetime = T0
    status: ModelRolloutStatus = field(default_factory=ModelRolloutStatus)
    decisions: list[Decision] = field(default_factory=list)
    route: TrafficState | None = field(default_factory=lambda: TrafficState(0, 0))
    seq: int = 0
    replicas: dict[str, int] = field(default_factory=lambda: {"v1": 3, "v2": 3})
    """Each version's Deployment; the shell reads them when the plan asks, and scales them."""

    def tick(
        self,
        *,
        seconds: float = 0,
        results: Sequence[GateResult] | None = None,
        request: RequestVerb | None = None,
        deleting: bool = False,
        route: TrafficState | None = None,
        auto_results: Sequence[GateResult] | None = None,
        preflight: Preflight | None = None,
        traffic_error: str | None = None,
    ) -> Decision:
        """One decide, as the shell calls it. A preflight the plan asks for passes unless
        ``preflight`` says otherwise."""
        self.now += timedelta(seconds=seconds)
        p = plan(self.spec, self.status, self.now)
        if results is None and auto_results is not None and p.check_due:
            results = auto_results
        if preflight is None and plan(self.spec, self.status, self.now).preflight:
            preflight = Preflight()
        req = None
        if request is not None:
            self.seq += 1
            req = Request(request, str(self.seq))
        obs = Observations(
            generation=1,
            request=req,
            analysis=list(results) if results is not None else None,
            traffic=None if traffic_error else route or self.route,
            traffic_error=traffic_error,
            deleting=deleting,
            replicas={v: self.replicas.get(v) for v in p.read_replicas},
            preflight=preflight,
            retry_every=10,
        )
        d = decide(self.spec, self.status, obs, self.now)
        self.status = ModelRolloutStatus.model_validate(d.status)
        if d.traffic is not None:
            self.route = d.traffic.state
        self.replicas.update(d.scale)
        self.decisions.append(d)
        return d

    def run(self, seconds: float, every: float = 10, results: Sequence[GateResult] = PASS) -> None:
        """Let time pass, answering every due check with ``results``."""
        for _ in range(int(seconds / every)):
            self.tick(seconds=every, auto_results=results)

    @property
    def reasons(self) -> list[str]:
        return [e.reason for d in self.decisions for e in d.events]
