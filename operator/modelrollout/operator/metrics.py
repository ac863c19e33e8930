"""The operator's own metrics, on /metrics.

SREs judge an operator by what it tells them: how many rollouts are in each
phase, where each candidate's weight stands, what the gates said, what was
decided, how long it took from a breached check to traffic back on stable,
and whether Prometheus itself answers.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrollout.api.base import parse_ts
from modelrollout.api.status import Phase
from modelrollout.engine import Decision


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase = Gauge("modelrollout_rollouts", "Rollouts by phase.", ["phase"], registry=r)
        self.rollout_phase = Gauge(
            "modelrollout_rollout_phase",
            "1 for the phase each rollout is in.",
            ["namespace", "rollout", "phase"],
            registry=r,
        )
        self.weight = Gauge(
            "modelrollout_candidate_weight_percent",
            "Share of live traffic on the candidate.",
            ["namespace", "rollout"],
            registry=r,
        )
        self.mirror = Gauge(
            "modelrollout_mirror_percent",
            "Share of live traffic mirrored to the candidate.",
            ["namespace", "rollout"],
            registry=r,
        )
        self.verdicts = Counter(
            "modelrollout_gate_verdicts_total",
            "Gate verdicts by gate and outcome.",
            ["namespace", "rollout", "gate", "verdict"],
            registry=r,
        )
        self.gate_value = Gauge(
            "modelrollout_gate_value",
            "The value each gate measured in the rollout's last check (NaN: no data).",
            ["namespace", "rollout", "gate", "stage"],
            registry=r,
        )
        self.gate_limit = Gauge(
            "modelrollout_gate_limit",
            "Each gate's limit in the rollout's last check; bound is min or max.",
            ["namespace", "rollout", "gate", "stage", "bound"],
            registry=r,
        )
        self.decisions = Counter(
            "modelrollout_decisions_total",
            "Decisions taken (one per Event reason).",
            ["namespace", "rollout", "reason"],
            registry=r,
        )
        self.notifications = Counter(
            "modelrollout_notifications_total",
            "Notifications by receiver kind and outcome (delivered, retried: delivered after "
            "a retry, failed, dropped: the queue was full).",
            ["kind", "outcome"],
            registry=r,
        )
        self.rollback_seconds = Histogram(
            "modelrollout_breach_to_rollback_seconds",
            "From the first failed check of a streak to traffic back on stable.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.query_seconds = Histogram(
            "modelrollout_prometheus_query_seconds",
            "Latency of queries to Prometheus.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.query_errors = Counter(
            "modelrollout_prometheus_query_errors_total",
            "Queries to Prometheus that got no usable answer, by kind: unreachable "
            "(connection, timeout, 5xx), refused (Prometheus rejected the query) or "
            "incomplete (a partial answer, or stale samples).",
            ["kind"],
            registry=r,
        )
        for kind in ("unreachable", "refused", "incomplete"):
            self.query_errors.labels(kind)  # both series exist at 0 from the start
        self.reconcile_seconds = Histogram(
            "modelrollout_reconcile_seconds",
            "Duration of one reconcile.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.guard_seconds = Histogram(
            "modelrollout_guard_round_seconds",
            "Duration of one round of the fast guard (every running rollout's count gates).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.guard_rollouts = Gauge(
            "modelrollout_guard_rollouts",
            "Rollouts with candidate traffic the fast guard looked at in its last round.",
            registry=r,
        )
        self.guard_findings = Counter(
            "modelrollout_guard_findings_total",
            "Rollouts the fast guard found with a gate shown bad between checks.",
            registry=r,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._gates: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        """Label values of the gate series each rollout has, so they can be removed."""

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_notification(self, kind: str, outcome: str) -> None:
        self.notifications.labels(kind, outcome).inc()

    def observe_query(self, seconds: float, error: str | None) -> None:
        """One query's latency, and its error kind (``SourceError.kind``) when it failed."""
        self.query_seconds.observe(seconds)
        if error is not None:
            self.query_errors.labels(error).inc()

    def observe_guard(self, seconds: float, rollouts: int, findings: int) -> None:
        """One round of the fast guard."""
        self.guard_seconds.observe(seconds)
        self.guard_rollouts.set(rollouts)
        self.guard_findings.inc(findings)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted rollout leaves no series behind."""
        self._phases.pop((namespace, name), None)
        self._refresh_phases()
        for labels, gauge in [((namespace, name), self.weight), ((namespace, name), self.mirror)]:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for p in Phase:
            with contextlib.suppress(KeyError):
                self.rollout_phase.remove(namespace, name, p.value)
        self._set_gates(namespace, name, set(), {})

    def _set_gates(
        self, ns: str, name: str, keep: set[tuple[str, ...]], values: dict[tuple[str, ...], float]
    ) -> None:
        """Set this check's gate series; drop the rollout's others (an earlier stage's)."""
        for labels in self._gates.pop((ns, name), set()) - keep:
            gauge = self.gate_limit if len(labels) == 3 else self.gate_value
            with contextlib.suppress(KeyError):
                gauge.remove(ns, name, *labels)
        for labels, value in values.items():
            gauge = self.gate_limit if len(labels) == 3 else self.gate_value
            gauge.labels(ns, name, *labels).set(value)
        if keep:
            self._gates[(ns, name)] = keep

    def observe(self, body: dict[str, Any], decision: Decision, seconds: float) -> None:
        meta = body.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        st = decision.status
        phase = str(st.get("phase", Phase.PENDING.value))
        self.reconcile_seconds.observe(seconds)
        weights = st.get("weights") or {}
        assert isinstance(weights, dict)
        self.weight.labels(ns, name).set(float(weights.get("candidate", 0)))
        self.mirror.labels(ns, name).set(float(st.get("mirrorPercent", 0) or 0))  # type: ignore[arg-type]
        for p in Phase:
            self.rollout_phase.labels(ns, name, p.value).set(1 if p.value == phase else 0)
        self._phases[(ns, name)] = phase
        self._refresh_phases()
        before = ((body.get("status") or {}).get("lastAnalysis") or {}).get("at")
        last = st.get("lastAnalysis")
        if isinstance(last, dict) and last.get("at") != before:
            values: dict[tuple[str, ...], float] = {}
            stage = str(last.get("stage", ""))
            for result in last.get("results", []):
                gate = str(result["metric"])
                self.verdicts.labels(ns, name, gate, result["verdict"]).inc()
                value = result.get("value")
                values[(gate, stage)] = math.nan if value is None else float(value)
                for bound in ("min", "max"):
                    if result.get(bound) is not None:
                        values[(gate, stage, bound)] = float(result[bound])
            self._set_gates(ns, name, set(values), values)
        for event in decision.events:
            self.decisions.labels(ns, name, event.reason).inc()
            if event.reason == "RolledBack":
                self._observe_breach(st)

    def _observe_breach(self, st: dict[str, Any]) -> None:
        ledger = st.get("analysisLedger") or []
        first = None
        for run in reversed(ledger):
            if run.get("verdict") != "Fail":
                break
            first = run.get("at")
        last = ledger[-1].get("at") if ledger else None
        if first and last:
            start, end = parse_ts(first), parse_ts(last)
            if start is not None and end is not None:
                self.rollback_seconds.observe((end - start).total_seconds())

    def _refresh_phases(self) -> None:
        counts = {p.value: 0 for p in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            self.phase.labels(phase).set(n)
