"""What every gate kind builds on: the context, templates, selectors and one result shape.

A gate's verdict is a value, never an exception. Inside an evaluator a measurement
problem (no data, NaN, several series where one was expected, an unreachable source, a
template naming an unknown variable) is raised as :class:`NoVerdict` and :func:`guarded`
turns it into an *inconclusive* result; :func:`gate_result` is the one place a
``GateResult`` is built and :func:`within` the one judge of a value against min and max.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from modelrollout.analysis import stats
from modelrollout.analysis.source import (
    IncompleteAnswer,
    MetricSource,
    QueryRefused,
    Sample,
    SourceError,
)
from modelrollout.api.base import parse_duration, parse_ts
from modelrollout.api.gates import MetricGate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import (
    REASON_REFUSED,
    REASON_UNREACHABLE,
    GateResult,
    ModelRolloutStatus,
    Stage,
    Verdict,
)

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

#: The counter of requests per version (docs/metrics-conventions.md).
REQUESTS_METRIC = "model_requests_total"

Limits = tuple[float | None, float | None]
"""(min, max) a result shows; either may be None."""
LimitsOf = Callable[[MetricGate], Limits]


class TemplateError(ValueError):
    """A query template names a variable the rollout does not have."""


# ----------------------------------------------------------------------- context


@dataclass(frozen=True)
class GateContext:
    """The rollout's variables, for query templates, and the status facts some kinds read."""

    model: str
    namespace: str
    candidate_version: str
    stable_version: str
    interval: str
    stage: str = ""
    stage_seconds: float = 0.0
    """Seconds since the current stage started (0: unknown). Windows that run "since the
    stage start" (accuracy, compare, score) read it."""
    previous: Sequence[GateResult] = ()
    """Results of earlier checks in this stage, newest first: the mSPRT keeps its
    always-valid p-value there."""
    alpha: float = 0.01
    """This gate's error level in this stage: its share of ``falseRollbackBudget``."""

    def variables(self, role: str = "candidate") -> dict[str, str]:
        version = self.candidate_version if role == "candidate" else self.stable_version
        return {
            "model": self.model,
            "namespace": self.namespace,
            "version": version,
            "role": role,
            "interval": self.interval,
            "stableVersion": self.stable_version,
            "candidateVersion": self.candidate_version,
            "stage": self.stage,
        }


def stage_seconds(status: ModelRolloutStatus, now: datetime) -> float:
    """Seconds since the current stage started (0 when unknown)."""
    started = parse_ts(status.stage_started_at)
    return 0.0 if started is None else max(0.0, (now - started).total_seconds())


def previous_results(status: ModelRolloutStatus) -> list[GateResult]:
    """Results of the checks run in the current stage, newest first.

    Only checks of the current stage count: a new stage (or a new candidate, which starts
    a new stage) starts every sequential test afresh.
    """
    started = status.stage_started_at or ""
    out: list[GateResult] = []
    for run in reversed(status.analysis_ledger):
        if run.stage == status.stage and run.at >= started:
            out.extend(run.results)
    return out


def context_for(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    *,
    namespace: str,
    now: datetime,
    candidate_version: str | None = None,
    stable_version: str | None = None,
    stage: str | None = None,
    seconds_in_stage: float | None = None,
) -> GateContext:
    """The context of a rollout's gates, by one set of rules for the operator and the CLI.

    Versions come from the status (what runs), else the spec; the stage, the seconds
    since it started and the earlier results of this stage from the status. A caller
    that knows better (``analyze``'s flags, ``report``'s stage-less range) passes it.
    """
    candidate = candidate_version or status.candidate_version or spec.candidate.version
    stable = stable_version or status.stable_version or (spec.stable.version if spec.stable else "")
    if stage is None:
        stage = status.stage.value if status.stage and status.stage != Stage.DONE else ""
    return GateContext(
        model=spec.model,
        namespace=namespace,
        candidate_version=candidate,
        stable_version=stable,
        interval=spec.analysis.interval,
        stage=stage,
        stage_seconds=stage_seconds(status, now) if seconds_in_stage is None else seconds_in_stage,
        previous=tuple(previous_results(status)),
        alpha=spec.alpha_per_test(),
    )


# ----------------------------------------------------------------------- templates


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; an unknown name is an error, never left in the query."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise TemplateError(
                f"unknown variable {{{{{name}}}}} (known: {', '.join(sorted(variables))})"
            )
        return variables[name]

    return _VAR.sub(sub, template)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(matchers: Mapping[str, str]) -> str:
    """``{k="v",...}`` with the values escaped as PromQL strings."""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in matchers.items()) + "}"


#: The selector of one version in a template: filled in by :func:`render`.
VERSION_TEMPLATE = selector({"model": "{{model}}", "version": "{{version}}"})


def per_request(events: str) -> str:
    """``sum(rate(events)) / sum(rate(requests))`` of one version over the interval."""
    return (
        f"sum(rate({events}{VERSION_TEMPLATE}[{{{{interval}}}}])) / "
        f"sum(rate({REQUESTS_METRIC}{VERSION_TEMPLATE}[{{{{interval}}}}]))"
    )


def version_selector(ctx: GateContext, role: str, label: str = "version") -> str:
    """The selector of one version (``role``: candidate or stable), values filled in."""
    return selector({"model": ctx.model, label: ctx.variables(role)["version"]})


# ----------------------------------------------------------------------- windows


def seconds_text(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def promql_duration(text: str) -> str:
    """A manifest duration as PromQL reads it: PromQL has no fractions (``1.5h``)."""
    if re.fullmatch(r"([0-9]+(ms|s|m|h))+", text):
        return text
    return seconds_text(parse_duration(text))


def since_stage(ctx: GateContext, override: str | None) -> str:
    """A window: the override, else since the stage start, else the analysis interval."""
    if override:
        return promql_duration(override)
    if ctx.stage_seconds >= 1:
        return seconds_text(ctx.stage_seconds)
    return promql_duration(ctx.interval)


def window_or_interval(ctx: GateContext, window: str | None) -> str:
    return promql_duration(window or ctx.interval)


def interval_window(gate: MetricGate, ctx: GateContext) -> str:
    """The window of the kinds that measure over the analysis interval."""
    return promql_duration(ctx.interval)


# ----------------------------------------------------------------------- results


def count(n: float | None) -> float | None:
    """Counts from ``increase()`` are extrapolated: keep them whole in the status."""
    return None if n is None else float(round(n))


def gate_result(
    metric: str,
    verdict: Verdict,
    *,
    value: float | None = None,
    reason: str | None = None,
    limits: Limits = (None, None),
    samples: float | None = None,
    needed: float | None = None,
) -> GateResult:
    """The one way a gate's result is built: counts kept whole, the limit shown."""
    return GateResult(
        metric=metric,
        value=value,
        min=limits[0],
        max=limits[1],
        verdict=verdict,
        reason=reason,
        samples=count(samples),
        needed_samples=count(needed),
    )


def within(value: float, limits: Limits) -> Verdict:
    """Pass when ``value`` holds (min, max); either bound may be absent."""
    lo, hi = limits
    if lo is not None and value < lo:
        return Verdict.FAIL
    if hi is not None and value > hi:
        return Verdict.FAIL
    return Verdict.PASS


def own_limits(gate: MetricGate) -> Limits:
    """The gate's min and max: the limit of every kind that takes them."""
    return gate.min, gate.max


def min_max_text(limits: Limits) -> str:
    """``max 0.5``, ``min 0.9``, ``min 0.9, max 1``; ``-`` for none."""
    lo, hi = limits
    parts = [f"min {lo:g}"] if lo is not None else []
    parts += [f"max {hi:g}"] if hi is not None else []
    return ", ".join(parts) or "-"


# ----------------------------------------------------------------------- the guard


class NoVerdict(Exception):
    """Raised inside an evaluator: the check is inconclusive, for this reason."""

    def __init__(
        self,
        reason: str,
        *,
        value: float | None = None,
        samples: float | None = None,
        needed: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value
        self.samples = samples
        self.needed = needed


Evaluator = Callable[[MetricGate, MetricSource, GateContext], GateResult]


def guarded(
    limits: Callable[[MetricGate], Limits] = own_limits,
) -> Callable[[Evaluator], Evaluator]:
    """Turn every measurement problem inside an evaluator into an inconclusive result.

    ``limits`` gives the limit the inconclusive result shows, as a verdict would.
    """

    def wrap(fn: Evaluator) -> Evaluator:
        @functools.wraps(fn)
        def run(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
            def inconclusive(reason: str, exc: NoVerdict | None = None) -> GateResult:
                return gate_result(
                    gate.name,
                    Verdict.INCONCLUSIVE,
                    value=exc.value if exc else None,
                    reason=reason,
                    limits=limits(gate),
                    samples=exc.samples if exc else None,
                    needed=exc.needed if exc else None,
                )

            try:
                return fn(gate, source, ctx)
            except NoVerdict as exc:
                return inconclusive(exc.reason, exc)
            except stats.DistributionMismatch as exc:
                return inconclusive(f"DistributionMismatch: {exc}")
            except (ValueError, ArithmeticError) as exc:  # TemplateError is a ValueError
                return inconclusive(str(exc))

        return run

    return wrap


# ----------------------------------------------------------------------- reading


def ask(source: MetricSource, promql: str) -> list[Sample]:
    """An instant query; a refused query or an unreachable source is no verdict.

    The reason says which: the query is the manifest's to fix, the source the platform's.
    """
    try:
        return source.instant(promql)
    except QueryRefused as exc:
        raise NoVerdict(f"{REASON_REFUSED}{exc}") from exc
    except IncompleteAnswer as exc:
        raise NoVerdict(f"incomplete answer: {exc}") from exc
    except SourceError as exc:
        raise NoVerdict(f"{REASON_UNREACHABLE}{exc}") from exc


def scalar(
    source: MetricSource, promql: str, what: str = "", default: float | None = None
) -> float:
    """One finite number from an instant query; ``default`` for no data (absent counters).

    ``what`` names the number in the reason; without it the number is the gate's value.
    """
    samples = ask(source, promql)
    if not samples:
        if default is not None:
            return default
        raise NoVerdict(f"no data for {what}" if what else "no data")
    if len(samples) > 1:
        where = f"{what}: " if what else ""
        raise NoVerdict(
            f"{where}{len(samples)} series returned; a gate needs exactly one (aggregate with sum)"
        )
    value = samples[0].value
    if not math.isfinite(value):
        raise NoVerdict(f"{what} is {value}" if what else f"value is {value} (no requests?)")
    return value


def categories(samples: list[Sample], by: str, side: str) -> dict[str, float]:
    """Counts by the value of label ``by``; a non-finite count is no verdict."""
    out: dict[str, float] = {}
    for s in samples:
        if not math.isfinite(s.value):
            raise NoVerdict(f"{side}: count of {by}={s.labels.get(by, '')!r} is {s.value}")
        key = s.labels.get(by, "")
        out[key] = out.get(key, 0.0) + s.value
    return out


# ----------------------------------------------------------------------- report


@dataclass(frozen=True)
class Series:
    """One PromQL expression ``report`` draws over the rollout's time."""

    label: str
    promql: str
    same_scale: bool = True
    """The gate's own value (drawn against its limits); else a related quantity (own axis)."""


@dataclass(frozen=True)
class Plot:
    """What ``report --prometheus`` draws of one gate: series, or a note why none."""

    series: tuple[Series, ...] = ()
    note: str | None = None


def per_version(
    template: str, ctx: GateContext, *, what: str = "", same_scale: bool = True, **extra: str
) -> tuple[Series, ...]:
    """A template's series for the candidate and, when it reads another series, stable."""
    out: list[Series] = []
    seen: set[str] = set()
    for role in ("candidate", "stable"):
        variables = {**ctx.variables(role), **extra}
        promql = render(template, variables)
        if promql not in seen:
            seen.add(promql)
            label = f"{what + ' ' if what else ''}{role} {variables['version']}"
            out.append(Series(label, promql, same_scale))
    return tuple(out)
