"""The threshold gates: sequential tests on counts since the stage start.

The first part replays answers recorded from Prometheus 2.42's /api/v1/query on a tiny
HTTP server on loopback, so the real prometheus-api-client code path runs. The rest
feeds the kinds a fake source (a table from a query substring to the answer) look after
look, as the operator would over a stage: what matters there is the verdict each stream
of counts gets, and that ``modelrollout analyze`` gives the same one. Against a live
Prometheus these gates run in tests/e2e.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from modelrollout.analysis.gates import (
    GateContext,
    context_for,
    counts,
    error_rate,
    evaluate,
    latency,
    render,
    throughput,
)
from modelrollout.analysis.source import PrometheusSource, Sample, SourceError
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult, ModelRolloutStatus, Verdict
from modelrollout.cli.main import main
from tests.calibration.fake_prometheus import histogram_quantile as prometheus_quantile

from .engine_harness import make_spec


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"version": f"v{i}"}, "value": [1764288000.123, v]}
                for i, v in enumerate(values)
            ],
        },
    }


RECORDED: dict[str, tuple[int, dict[str, Any]]] = {
    "one": (200, vector("0.231")),
    "empty": (200, vector()),
    "two": (200, vector("0.1", "0.2")),
    "nan": (200, vector("NaN")),
    "inf": (200, vector("+Inf")),
    "scalar": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}),
    "bad": (
        400,
        {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected"},
    ),
}


class Replay(BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_GET(self) -> None:
        self._answer(parse_qs(urlparse(self.path).query).get("query", [""])[0])

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        self._answer(parse_qs(body).get("query", [""])[0])

    def _answer(self, query: str) -> None:
        Replay.queries.append(query)
        code, payload = RECORDED.get(query.split("#")[0].strip(), RECORDED["one"])
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prom() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


CTX = GateContext(
    model="fraud-detector",
    namespace="ml",
    candidate_version="v2",
    stable_version="v1",
    interval="1m",
)


def gate(query: str, **kw: Any) -> MetricGate:
    return MetricGate.model_validate({"name": "g", "query": query, "max": 0.5, **kw})


@pytest.mark.parametrize(
    ("query", "verdict", "value", "reason"),
    [
        pytest.param(
            "one", Verdict.INCONCLUSIVE, 0.231, "sign test", id="one-value-shows-nothing-yet"
        ),
        pytest.param("empty", Verdict.INCONCLUSIVE, None, "no data", id="empty-is-inconclusive"),
        pytest.param("two", Verdict.INCONCLUSIVE, None, "2 series", id="multi-series-inconclusive"),
        pytest.param("nan", Verdict.INCONCLUSIVE, None, "nan", id="nan-is-inconclusive"),
        pytest.param("inf", Verdict.INCONCLUSIVE, None, "inf", id="inf-is-inconclusive"),
        pytest.param("scalar", Verdict.INCONCLUSIVE, 3.0, "breaks", id="a-scalar-is-read"),
        pytest.param("bad", Verdict.INCONCLUSIVE, None, "query refused: ", id="refused-query"),
    ],
)
def test_a_gate_turns_each_kind_of_answer_into_a_verdict(
    prom: str, query: str, verdict: Verdict, value: float | None, reason: str | None
) -> None:
    [result] = evaluate([gate(query)], PrometheusSource(prom), CTX)
    assert result.verdict == verdict
    assert result.value == value
    if reason:
        assert reason in (result.reason or "")
    assert result.max == 0.5


def test_an_unreachable_prometheus_is_inconclusive_never_a_pass() -> None:
    source = PrometheusSource("http://127.0.0.1:9", timeout=1)
    [result] = evaluate([gate("one")], source, CTX)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "unreachable" in (result.reason or "")
    with pytest.raises(SourceError):
        source.instant("up")


def test_a_query_gate_below_its_min_fails_once_most_checks_broke_it(prom: str) -> None:
    g = MetricGate.model_validate({"name": "qps", "query": "one", "min": 1})
    previous: list[GateResult] = []
    for _ in range(30):
        [result] = evaluate([g], PrometheusSource(prom), replace(CTX, previous=tuple(previous)))
        previous.insert(0, result)
        if result.verdict != Verdict.INCONCLUSIVE:
            break
    assert (result.verdict, result.min) == (Verdict.FAIL, 1)
    assert 5 <= len(previous) <= 12  # slow by design: a sign test over checks


def test_templates_fill_the_rollout_variables() -> None:
    text = render(
        'x{model="{{model}}",ns="{{ namespace }}",v="{{version}}",r="{{role}}"}[{{interval}}]',
        CTX.variables(),
    )
    assert text == 'x{model="fraud-detector",ns="ml",v="v2",r="candidate"}[1m]'
    assert 'v="v1"' in render('v="{{version}}"', CTX.variables(role="stable"))


def test_an_unknown_template_variable_is_inconclusive_with_the_name(prom: str) -> None:
    [result] = evaluate([gate("x{{nope}}")], PrometheusSource(prom), CTX)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "{{nope}}" in (result.reason or "")


@pytest.mark.parametrize(
    ("module", "kind", "expected"),
    [
        pytest.param(
            latency,
            {"latency": {"quantile": 0.95}},
            "histogram_quantile(0.95, sum by (le) (rate(model_request_duration_seconds_bucket"
            '{model="{{model}}",version="{{version}}"}[{{interval}}])))',
            id="latency",
        ),
        pytest.param(
            error_rate,
            {"errorRate": {}},
            'sum(rate(model_request_errors_total{model="{{model}}",version="{{version}}"}'
            '[{{interval}}])) / sum(rate(model_requests_total{model="{{model}}",'
            'version="{{version}}"}[{{interval}}]))',
            id="error-rate",
        ),
        pytest.param(
            throughput,
            {"throughput": {}},
            'sum(rate(model_requests_total{model="{{model}}",version="{{version}}"}[{{interval}}]))',
            id="throughput",
        ),
    ],
)
def test_built_in_gates_need_no_promql(module: Any, kind: dict[str, Any], expected: str) -> None:
    g = MetricGate.model_validate({"name": "b", "max": 1, **kind})
    assert module.template(g) == expected


# =========================================================================== count tests


class Counts:
    """A fake source: the first key that is a substring of the query answers it."""

    def __init__(self, table: Mapping[str, list[Sample]] | None = None) -> None:
        self.table = dict(table or {})
        self.queries: list[str] = []

    def instant(self, query: str) -> list[Sample]:
        self.queries.append(query)
        return next((v for k, v in self.table.items() if k in query), [])


def one(value: float) -> list[Sample]:
    return [Sample({}, value)]


BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)  # the limit 0.25 is a boundary; 0.3 is not


def histogram(fast: float, middle: float = 0.0, slow: float = 0.0) -> list[Sample]:
    """Cumulative buckets: ``fast`` requests at or below 0.1 s, ``middle`` in (0.25, 0.5],
    ``slow`` above 1 s."""
    cumulative = {0.05: fast / 2, 0.1: fast, 0.25: fast, 0.5: fast + middle, 1.0: fast + middle}
    samples = [Sample({"le": f"{le:g}"}, v) for le, v in cumulative.items()]
    return [*samples, Sample({"le": "+Inf"}, fast + middle + slow)]


def stream_errors(metric: str) -> Callable[[int, float], Counts]:
    """Look ``k`` of a stream with ``rate`` errors among 100 requests per look."""

    def source(k: int, rate: float) -> Counts:
        n = 100.0 * k
        return Counts({metric: one(rate * n), "model_requests_total": one(n)})

    return source


def stream_latency(k: int, slow_share: float) -> Counts:
    n = 100.0 * k
    return Counts({"_bucket": histogram(n * (1 - slow_share), slow=n * slow_share)})


def stream_throughput(k: int, per_second: float) -> Counts:
    return Counts({"model_requests_total": one(per_second * 60 * k)})


KINDS: dict[str, dict[str, object]] = {
    "errorRate": {"errorRate": {}, "max": 0.01},
    "nullRate": {"nullRate": {}, "max": 0.01},
    "latency": {"latency": {"quantile": 0.99}, "max": 0.25},
    "throughput": {"throughput": {}, "min": 2},
}
STREAMS: dict[str, Callable[[int, float], Counts]] = {
    "errorRate": stream_errors("model_request_errors_total"),
    "nullRate": stream_errors("model_null_outputs_total"),
    "latency": stream_latency,
    "throughput": stream_throughput,
}
ALPHA = 0.01 / 3


def kind_gate(kind: str) -> MetricGate:
    return MetricGate.model_validate({"name": "g", **KINDS[kind]})


def at_look(k: int) -> GateContext:
    """The context of look ``k`` of a stage checked every minute."""
    return replace(CTX, stage="canary", stage_seconds=60.0 * k, alpha=ALPHA)


def looks(kind: str, truth: float, count: int) -> list[GateResult]:
    g = kind_gate(kind)
    return [evaluate([g], STREAMS[kind](k, truth), at_look(k))[0] for k in range(1, count + 1)]


@pytest.mark.parametrize(
    ("kind", "truth"),
    [
        pytest.param("errorRate", 0.01, id="error-rate-exactly-at-max"),
        pytest.param("nullRate", 0.01, id="null-rate-exactly-at-max"),
        pytest.param("latency", 0.01, id="p99-exactly-at-the-limit-boundary"),
        pytest.param("throughput", 2.0, id="throughput-exactly-at-min"),
    ],
)
def test_a_stream_at_the_limit_never_passes_and_only_waits_for_evidence(
    kind: str, truth: float
) -> None:
    results = looks(kind, truth, 200)
    assert {r.verdict for r in results} == {Verdict.INCONCLUSIVE}
    # gathering evidence: the engine holds without counting towards inconclusiveLimit
    assert all((r.samples or 0) < (r.needed_samples or 0) for r in results)
    assert "not yet shown" in (results[-1].reason or "")


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in KINDS])
def test_no_data_never_passes_and_counts_as_missing_data(kind: str) -> None:
    g = kind_gate(kind)
    for k in range(1, 201):
        [r] = evaluate([g], Counts(), at_look(k))
        assert r.verdict == Verdict.INCONCLUSIVE
        assert r.needed_samples is None  # not "waiting for evidence": a human is called


@pytest.mark.parametrize(
    ("kind", "truth"),
    [
        pytest.param("errorRate", 0.5, id="half-the-requests-fail-with-max-1-percent"),
        pytest.param("nullRate", 0.5, id="half-the-answers-are-null-with-max-1-percent"),
        pytest.param("latency", 1.0, id="every-request-slower-than-the-limit"),
        pytest.param("throughput", 0.2, id="a-tenth-of-the-min-throughput"),
    ],
)
def test_a_large_breach_fails_on_the_first_check_with_the_data(kind: str, truth: float) -> None:
    [first] = looks(kind, truth, 1)  # 100 requests (or one minute)
    assert first.verdict == Verdict.FAIL, first.reason
    assert "shown outside the limit" in (first.reason or "")


@pytest.mark.parametrize(
    ("kind", "truth", "earliest", "latest"),
    [
        # 0 errors: about 700 requests show "below 1 %" at 99.67 %; 0.1 % takes longer.
        pytest.param("errorRate", 0.0, 5, 10, id="no-errors"),
        pytest.param("errorRate", 0.001, 5, 20, id="errors-a-tenth-of-max"),
        pytest.param("nullRate", 0.0, 5, 10, id="no-nulls"),
        pytest.param("latency", 0.0, 5, 10, id="every-request-fast"),
        pytest.param("throughput", 10.0, 1, 1, id="five-times-the-min-throughput"),
    ],
)
def test_a_healthy_stream_passes_once_enough_requests_arrived(
    kind: str, truth: float, earliest: int, latest: int
) -> None:
    results = looks(kind, truth, latest)
    verdicts = [r.verdict for r in results]
    assert Verdict.FAIL not in verdicts
    first = verdicts.index(Verdict.PASS) + 1
    assert earliest <= first <= latest
    assert all(v == Verdict.PASS for v in verdicts[first - 1 :])  # a CS only narrows here
    waiting = results[: first - 1]
    assert all((r.samples or 0) < (r.needed_samples or 0) for r in waiting)


def test_each_count_test_reads_its_counters_since_the_stage_start() -> None:
    context = replace(CTX, stage_seconds=600.5)
    sources = {kind: STREAMS[kind](10, 0.0) for kind in KINDS}
    for kind, source in sources.items():
        evaluate([kind_gate(kind)], source, context)
    sel = '{model="fraud-detector",version="v2"}'
    assert sources["errorRate"].queries == [
        f"sum(increase(model_requests_total{sel}[601s]))",
        f"sum(increase(model_request_errors_total{sel}[601s]))",
    ]
    assert sources["nullRate"].queries[1] == f"sum(increase(model_null_outputs_total{sel}[601s]))"
    assert sources["latency"].queries == [
        f"sum by (le) (increase(model_request_duration_seconds_bucket{sel}[601s]))"
    ]
    assert sources["throughput"].queries == [f"sum(increase(model_requests_total{sel}[601s]))"]
    # No stage age known: the analysis interval.
    source = STREAMS["errorRate"](10, 0.0)
    evaluate([kind_gate("errorRate")], source, CTX)
    assert source.queries[0].endswith("[1m]))")


def test_each_result_carries_its_cs_and_the_level_of_its_share_of_the_budget() -> None:
    spec = make_spec(
        analysis={
            "interval": "30s",
            "falseRollbackBudget": 0.02,
            "metrics": [{"name": kind.lower(), **fields} for kind, fields in KINDS.items()],
        }
    )
    status = ModelRolloutStatus()
    context = context_for(spec, status, namespace="ml", now=datetime(2026, 1, 1))
    context = replace(context, stage_seconds=600)
    assert spec.alpha_per_test() == pytest.approx(0.02 / 4)
    for kind, g in zip(KINDS, spec.analysis.metrics, strict=True):
        [r] = evaluate([g], STREAMS[kind](10, 0.0), context)
        assert r.alpha == spec.alpha_per_test()
        assert r.lower is not None
        assert r.upper is not None
        assert r.lower <= r.upper
        assert f"{100 * (1 - spec.alpha_per_test()):.4g}% anytime CS" in (r.reason or "")


def test_an_error_rate_shows_its_plug_in_value_and_its_cs() -> None:
    r = counts.judge_share("e", 21, 5000, (None, 0.01), ALPHA)
    assert (r.verdict, r.value, r.samples) == (Verdict.PASS, 0.0042, 5000)
    assert r.lower is not None
    assert r.upper is not None
    assert r.lower < 0.0042 < r.upper <= 0.01
    assert r.reason is not None
    assert r.reason.startswith("error rate 0.0042 (21 of 5000), 99.67% anytime CS [")
    assert r.reason.endswith("<= 0.01: shown within the limit")


# --------------------------------------------------------------------------- latency buckets


@pytest.mark.parametrize(
    ("limit", "fast", "middle", "slow", "verdict"),
    [
        # limit 0.3 lies between the boundaries 0.25 and 0.5
        pytest.param(0.3, 1000, 0, 0, Verdict.PASS, id="all-at-or-below-b-lo-pass"),
        pytest.param(0.3, 0, 0, 100, Verdict.FAIL, id="all-above-b-hi-fail"),
        pytest.param(0.3, 0, 1000, 0, Verdict.INCONCLUSIVE, id="all-between-the-two-undecided"),
        pytest.param(0.25, 0, 100, 0, Verdict.FAIL, id="limit-on-a-boundary-fails-above-it"),
    ],
)
def test_a_latency_limit_passes_on_the_boundary_below_and_fails_on_the_one_above(
    limit: float, fast: float, middle: float, slow: float, verdict: Verdict
) -> None:
    g = MetricGate.model_validate({"name": "p99", "latency": {}, "max": limit})
    [r] = evaluate([g], Counts({"_bucket": histogram(fast, middle, slow)}), at_look(10))
    assert r.verdict == verdict, r.reason


def test_a_latency_min_is_the_same_rule_the_other_way_round() -> None:
    g = MetricGate.model_validate({"name": "p99", "latency": {}, "min": 0.3})
    slow = evaluate([g], Counts({"_bucket": histogram(0, 0, 100)}), at_look(1))[0]
    fast = evaluate([g], Counts({"_bucket": histogram(1000)}), at_look(10))[0]
    assert (slow.verdict, fast.verdict) == (Verdict.PASS, Verdict.FAIL)


@pytest.mark.parametrize(
    "limit",
    [pytest.param(0.01, id="below-the-smallest-bucket"), pytest.param(2, id="above-the-largest")],
)
def test_a_limit_no_bucket_resolves_is_inconclusive_naming_the_buckets(limit: float) -> None:
    g = MetricGate.model_validate({"name": "p99", "latency": {}, "max": limit})
    [r] = evaluate([g], Counts({"_bucket": histogram(1000)}), at_look(10))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert f"no bucket resolves limit {limit:g} (buckets: 0.05, 0.1, 0.25, 0.5, 1)" in (
        r.reason or ""
    )
    assert r.needed_samples is None  # waiting would not fix it


@pytest.mark.parametrize(
    ("q", "cumulative"),
    [
        pytest.param(0.5, [(0.1, 50), (0.2, 100), (math.inf, 100)], id="median-on-a-boundary"),
        pytest.param(0.75, [(0.1, 50), (0.2, 100), (math.inf, 100)], id="inside-a-bucket"),
        pytest.param(0.99, [(0.1, 10), (0.5, 90), (math.inf, 100)], id="in-the-inf-bucket"),
        pytest.param(0.9, [(0.1, 0), (0.2, 0), (1.0, 40), (math.inf, 40)], id="empty-first"),
        pytest.param(0.5, [(0.1, 3), (0.2, 3), (0.3, 9), (math.inf, 9)], id="empty-middle"),
    ],
)
def test_the_value_shown_is_the_quantile_prometheus_would_interpolate(
    q: float, cumulative: list[tuple[float, float]]
) -> None:
    edges = [le for le, _ in cumulative]
    per_bucket = [c - (cumulative[i - 1][1] if i else 0) for i, (_, c) in enumerate(cumulative)]
    ours = counts.histogram_quantile(q, edges, per_bucket)
    assert ours == pytest.approx(prometheus_quantile(q, cumulative))


# --------------------------------------------------------------------------- query: sign test


def query_looks(values: list[float], limits: dict[str, float]) -> list[GateResult]:
    """A query gate checked once per value, with only the newest earlier result kept
    (a ledger much shorter than the stage)."""
    g = MetricGate.model_validate({"name": "q", "query": "x", **limits})
    out: list[GateResult] = []
    for v in values:
        previous = tuple(out[-1:])
        [r] = evaluate([g], Counts({"x": one(v)}), replace(CTX, previous=previous, alpha=ALPHA))
        out.append(r)
    return out


@pytest.mark.parametrize(
    ("values", "verdict", "within"),
    [
        pytest.param([0.1] * 30, Verdict.PASS, range(8, 14), id="always-within-passes-slowly"),
        pytest.param([0.9] * 30, Verdict.FAIL, range(8, 14), id="always-broken-fails-slowly"),
    ],
)
def test_a_query_gate_is_a_sign_test_over_this_stages_checks(
    values: list[float], verdict: Verdict, within: range
) -> None:
    results = query_looks(values, {"max": 0.5})
    verdicts = [r.verdict for r in results]
    first = verdicts.index(verdict) + 1
    assert first in within
    assert set(verdicts[: first - 1]) == {Verdict.INCONCLUSIVE}
    assert all((r.samples or 0) < (r.needed_samples or 0) for r in results[: first - 1])
    assert [r.value for r in results] == values  # each check shows its own value


def test_a_query_that_breaks_its_limit_every_other_check_never_passes() -> None:
    results = query_looks([0.1, 0.9] * 100, {"max": 0.5})
    assert {r.verdict for r in results} == {Verdict.INCONCLUSIVE}


def test_the_violation_count_survives_in_the_newest_result_alone() -> None:
    rng = random.Random(7)
    values = [rng.choice([0.1, 0.9, 0.2]) for _ in range(60)]
    results = query_looks(values, {"max": 0.5})
    broke = 0
    for i, (v, r) in enumerate(zip(values, results, strict=True)):
        broke += v > 0.5
        assert counts.violations_so_far("q", [r]) == (broke, i + 1)
    assert counts.violations_so_far("other", results[::-1]) == (0, 0)


# --------------------------------------------------------------------------- analyze agrees


def analyze_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["analyze", *argv, "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("kind", "truth", "k"),
    [
        pytest.param("errorRate", 0.0, 3, id="errors-waiting"),
        pytest.param("errorRate", 0.0, 10, id="errors-pass"),
        pytest.param("errorRate", 0.5, 1, id="errors-fail"),
        pytest.param("latency", 0.0, 10, id="latency-pass"),
        pytest.param("latency", 0.01, 10, id="latency-at-the-limit"),
        pytest.param("latency", 1.0, 1, id="latency-fail"),
        pytest.param("throughput", 10.0, 1, id="throughput-pass"),
        pytest.param("throughput", 0.2, 1, id="throughput-fail"),
    ],
)
def test_analyze_gives_the_operators_verdict_for_the_same_counts(
    capsys: pytest.CaptureFixture[str], kind: str, truth: float, k: int
) -> None:
    source = STREAMS[kind](k, truth)
    [gate_result] = evaluate([kind_gate(kind)], source, at_look(k))
    answer = next(iter(source.table.values()))
    if kind == "errorRate":
        errors = source.table["model_request_errors_total"][0].value
        requests = source.table["model_requests_total"][0].value
        args = ["--errors", f"{errors},{requests}", "--max", "0.01"]
    elif kind == "latency":
        buckets = ",".join(f"{s.labels['le']}={s.value}" for s in answer)
        args = ["--latency-buckets", buckets, "--quantile", "0.99", "--max", "0.25"]
    else:
        args = ["--requests", str(answer[0].value), "--seconds", str(60 * k), "--min", "2"]
    code, doc = analyze_json(capsys, *args, "--alpha", str(ALPHA))
    assert doc["verdict"] == gate_result.verdict.value
    assert code == {"Pass": 0, "Fail": 1, "Inconclusive": 2}[gate_result.verdict.value]
    for key in ("value", "lower", "upper", "samples", "neededSamples"):
        assert doc.get(key) == pytest.approx(gate_result.dump().get(key)), key


def test_analyze_runs_the_query_sign_test_over_the_values_of_each_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = [0.1, 0.9, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    results = query_looks(values, {"max": 0.5})
    for n in (1, 5, len(values)):
        text = ",".join(f"{v:g}" for v in values[:n])
        _, doc = analyze_json(capsys, "--checks", text, "--max", "0.5", "--alpha", str(ALPHA))
        assert doc["verdict"] == results[n - 1].verdict.value
        assert doc["samples"] == n


def test_analyze_names_the_buckets_of_a_limit_no_bucket_resolves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["analyze", "--latency-buckets", "0.1=5,0.5=9,+Inf=10", "--max", "2"])
    assert code == 2
    assert "no bucket resolves limit 2 (buckets: 0.1, 0.5)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--errors", "1,100"], id="no-limit"),
        pytest.param(["--errors", "1", "--max", "0.1"], id="one-number"),
        pytest.param(["--requests", "10", "--min", "1"], id="no-seconds"),
        pytest.param(["--latency-buckets", "0.1:5", "--max", "0.1"], id="not-le-equals-count"),
        pytest.param(["--errors", "1,100", "--max", "0.1", "--alpha", "2"], id="bad-alpha"),
    ],
)
def test_analyze_refuses_unusable_counts_with_exit_3(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["analyze", *argv]) == 3
    assert capsys.readouterr().err.startswith("modelrollout analyze:")
