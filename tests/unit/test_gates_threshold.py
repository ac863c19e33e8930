"""The Prometheus source and threshold gates, against recorded Prometheus API answers.

A tiny HTTP server on loopback replays answers recorded from Prometheus
2.42's /api/v1/query, so the real prometheus-api-client code path runs.
Against a live Prometheus these gates run in tests/e2e.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from modelrollout.analysis.gates import (
    GateContext,
    error_rate,
    evaluate,
    latency,
    render,
    throughput,
)
from modelrollout.analysis.source import PrometheusSource, SourceError
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import Verdict


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
        pytest.param("one", Verdict.PASS, 0.231, None, id="one-series-under-max-passes"),
        pytest.param("empty", Verdict.INCONCLUSIVE, None, "no data", id="empty-is-inconclusive"),
        pytest.param("two", Verdict.INCONCLUSIVE, None, "2 series", id="multi-series-inconclusive"),
        pytest.param("nan", Verdict.INCONCLUSIVE, None, "nan", id="nan-is-inconclusive"),
        pytest.param("inf", Verdict.INCONCLUSIVE, None, "inf", id="inf-is-inconclusive"),
        pytest.param("scalar", Verdict.FAIL, 3.0, None, id="scalar-over-max-fails"),
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


def test_min_gates_fail_below_the_minimum(prom: str) -> None:
    g = MetricGate.model_validate({"name": "qps", "query": "one", "min": 1})
    [result] = evaluate([g], PrometheusSource(prom), CTX)
    assert (result.verdict, result.min) == (Verdict.FAIL, 1)


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
