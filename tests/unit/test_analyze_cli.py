"""``modelrollout analyze``, run in-process.

The offline forms need nothing. The dry run talks to a tiny HTTP server on loopback
that answers /api/v1/query and /api/v1/query_range like Prometheus, by query
substring, so the real prometheus-api-client path runs (including
``PrometheusSource.range``). Against a live Prometheus the dry run runs in tests/e2e.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from modelrollout.analysis.source import PrometheusSource, SourceError
from modelrollout.cli.main import main

R = "100,200,400,200,100"
C = "80,180,380,240,120"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["analyze", *argv])
    return code, capsys.readouterr().out


# --------------------------------------------------------------------------- offline


def test_psi_of_the_reference_vectors_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--reference", R, "--candidate", C)
    assert code == 0
    assert "psi: 0.0185352 (limit <= 0.1): Pass" in out
    assert "samples: 1000/1000" in out


def test_js_as_json_is_not_yet_shown_within_its_max_on_1000_observations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(capsys, "--reference", R, "--candidate", C, "--method", "js", "-o", "json")
    doc = json.loads(out)
    assert code == 2
    assert doc["value"] == pytest.approx(0.057775, abs=1e-6)
    assert doc["verdict"] == "Inconclusive"
    assert doc["samples"] == 1000 < doc["neededSamples"]  # gathering evidence
    assert doc["lower"] == 0.0 < doc["max"] < doc["upper"]
    assert doc["alpha"] == 0.01


def test_a_tight_max_fails_and_chi2_gates_its_p_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--reference", R, "--candidate", C, "--max", "0.01")
    assert code == 2  # PSI 0.0185 on 1000 a side: not yet shown above 0.01
    code, out = run(capsys, "--reference", R, "--candidate", "400,200,200,100,100", "--max", "0.1")
    assert code == 1
    assert "Fail" in out
    code, out = run(capsys, "--reference", R, "--candidate", C, "--method", "chi2")
    assert code == 0
    assert "chi2: 0.0553222 (limit >= 0.01)" in out
    assert "PSI confidence sequence" in out
    ten = ",".join(str(10 * int(x)) for x in C.split(","))
    refs = ",".join(str(10 * int(x)) for x in R.split(","))
    code, out = run(capsys, "--reference", refs, "--candidate", ten, "--method", "chi2")
    assert code == 1  # shown to differ: the e-value passed 1/alpha


def test_too_few_samples_is_inconclusive(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--reference", "10,20,40", "--candidate", "8,18,38", "-o", "json")
    doc = json.loads(out)
    assert code == 2
    assert (doc["verdict"], doc["samples"], doc["neededSamples"]) == ("Inconclusive", 64, 1000)
    code, out = run(
        capsys, "--reference", "10,20,40", "--candidate", "8,18,38", "--min-samples", "50"
    )
    assert code == 2  # past the floor, but 64 observations show little
    assert "not yet shown" in out


def test_unusable_vectors_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--reference", "1,2,x", "--candidate", "1,2,3"]) == 3
    assert main(["analyze", "--reference", "1,2", "--candidate", "1,2,3"]) == 3
    assert main(["analyze", "--reference", "1,2"]) == 3
    assert "--candidate" in capsys.readouterr().err


def test_agreement_from_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--agreement", "980,20,5", "--min-pairs", "100")
    assert code == 0
    assert "agreement: 0.98 (limit >= 0.95): Pass" in out
    assert "agreement 0.9800 (980 of 1000 pairs)" in out
    code, out = run(capsys, "--agreement", "980,20,500")
    assert code == 2
    assert "too many unpaired" in out
    code, _ = run(capsys, "--agreement", "900,100,0", "--min", "0.95")
    assert code == 1
    assert main(["analyze", "--agreement", "1,2"]) == 3
    assert main(["analyze", "--agreement", "980,20,5", "--alpha", "1.5"]) == 3


def test_98_percent_agreement_on_200_pairs_is_not_yet_shown_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 10: it exited 1 (Fail) although 98 % agreement clears min 0.95.
    code, out = run(capsys, "--agreement", "196,4,0", "--min-pairs", "200")
    assert code == 2
    assert "agreement: 0.98 (limit >= 0.95): Inconclusive" in out
    assert "not yet shown" in out
    samples, needed = out.split("samples: ")[1].split()[0].split("/")
    assert int(samples) == 200 < int(needed)


# --------------------------------------------------------------------------- dry run


def cumulative(counts: list[int]) -> list[tuple[str, float]]:
    edges = ["-1", "0", "1", "+Inf"]
    out, total = [], 0
    for e, c in zip(edges, counts, strict=True):
        total += c
        out.append((e, float(total)))
    return out


def vector(rows: list[tuple[dict[str, str], float]]) -> dict[str, Any]:
    return {
        "resultType": "vector",
        "result": [{"metric": m, "value": [1764288000.0, str(v)]} for m, v in rows],
    }


def matrix(values: list[float]) -> dict[str, Any]:
    points = [[1764288000.0 + 30 * i, str(v)] for i, v in enumerate(values)]
    return {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}


STEADY = [0.1 + 0.001 * (i % 5) for i in range(20)]

#: First matching substring wins.
ANSWERS: list[tuple[str, dict[str, Any]]] = [
    ("model_request_errors_total", vector([({}, 5.0)])),  # 5 of 5000 since the stage start
    ("model_requests_total", vector([({}, 5000.0)])),
    ('model_input_feature_bucket{model="fraud-detector",feature="f0",version="v2"}', vector(
        [({"le": le}, v) for le, v in cumulative([300, 700, 700, 300])]
    )),
    ('model_input_feature_bucket{model="fraud-detector",feature="f0",version="v1"}', vector(
        [({"le": le}, v) for le, v in cumulative([310, 690, 710, 290])]
    )),
    ("model_shadow_comparisons_total", vector(
        [({"result": "agree"}, 1960.0), ({"result": "disagree"}, 40.0)]
    )),
    ("model_shadow_unpaired_total", vector([({}, 10.0)])),
    ("model_labelled_feedback_total", vector([({}, 50.0)])),
    ("model_correct_predictions_total", vector([({}, 47.0)])),
    ("latency_p99", matrix(STEADY)),
]  # fmt: skip


class FakePrometheus(BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self._answer(url.path, parse_qs(url.query))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        self._answer(urlparse(self.path).path, parse_qs(body))

    def _answer(self, path: str, params: dict[str, list[str]]) -> None:
        query = params.get("query", [""])[0]
        FakePrometheus.queries.append(f"{path} {query}")
        data: dict[str, Any] = {"resultType": "vector", "result": []}
        for key, answer in ANSWERS:
            if key in query:
                data = answer
                break
        if path.endswith("/query_range") and data["resultType"] != "matrix":
            data = {"resultType": "matrix", "result": []}
        payload = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prom() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


ROLLOUT: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "fraud-detector", "namespace": "ml"},
    "spec": {
        "model": "fraud-detector",
        "stable": {"version": "v1"},
        "candidate": {"version": "v2"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-detector"}},
        "strategy": {
            "shadow": {"mirrorPercent": 100, "duration": "10m"},
            "canary": {"steps": [{"setWeight": 10}, {"analysis": {"checks": 2}}]},
        },
        "analysis": {
            "interval": "1m",
            "metrics": [
                {"name": "error-rate", "errorRate": {}, "max": 0.01},
                {
                    "name": "input-drift-f0",
                    "drift": {
                        "metric": "model_input_feature",
                        "labels": {"feature": "f0"},
                        "window": "10m",
                    },
                    "max": 0.1,
                },
                {
                    "name": "shadow-agreement",
                    "agreement": {"minPairs": 200},
                    "min": 0.95,
                    "stages": ["shadow"],
                },
                {
                    "name": "p99-vs-stable",
                    "compare": {
                        "query": 'latency_p99{version="{{version}}"}',
                        "direction": "increase",
                    },
                    "stages": ["canary"],
                },
                {
                    "name": "accuracy",
                    "accuracy": {"minLabels": 500, "maxDrop": 0.02},
                    "stages": ["canary"],
                },
            ],
        },
    },
}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text("# a comment\n---\n" + yaml.safe_dump(ROLLOUT))
    return path


def test_dry_run_prints_every_gate_of_the_stage(
    capsys: pytest.CaptureFixture[str], prom: str, manifest: Path
) -> None:
    code, out = run(capsys, "-f", str(manifest), "--prometheus", prom, "--stage", "canary")
    assert "fraud-detector: candidate v2 vs stable v1, stage canary" in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "shadow-agreement" not in lines
    assert lines["error-rate"].split()[1:4] == ["Pass", "0.001", "<="]
    assert lines["input-drift-f0"].split()[1] == "Pass"
    assert "2000/1000" in lines["input-drift-f0"]
    assert lines["p99-vs-stable"].split()[1] == "Pass"
    assert lines["accuracy"].split()[1] == "Inconclusive"
    assert "waiting for labels" in lines["accuracy"]
    assert "50/500" in lines["accuracy"]
    assert "verdict: Inconclusive" in out
    assert code == 2
    ranges = [q for q in FakePrometheus.queries if q.startswith("/api/v1/query_range")]
    assert any('latency_p99{version="v1"}' in q for q in ranges)
    assert any('latency_p99{version="v2"}' in q for q in ranges)


def test_dry_run_json_of_the_shadow_stage(
    capsys: pytest.CaptureFixture[str], prom: str, manifest: Path
) -> None:
    code, out = run(
        capsys, "-f", str(manifest), "--prometheus", prom, "--stage", "shadow", "-o", "json"
    )
    doc = json.loads(out)
    assert code == 0
    assert doc["verdict"] == "Pass"
    assert doc["stage"] == "shadow"
    results = {r["metric"]: r for r in doc["results"]}
    assert set(results) == {"error-rate", "input-drift-f0", "shadow-agreement"}
    agreement = results["shadow-agreement"]
    assert agreement["value"] == pytest.approx(0.98)
    assert agreement["lower"] >= 0.95
    assert "agreement 0.9800 (1960 of 2000 pairs)" in agreement["reason"]


def test_dry_run_ignore_policy_and_a_missing_stable(
    capsys: pytest.CaptureFixture[str], prom: str, tmp_path: Path
) -> None:
    doc = json.loads(json.dumps(ROLLOUT))
    doc["spec"]["analysis"]["metrics"][4]["onInconclusive"] = "Ignore"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out = run(capsys, "-f", str(path), "--prometheus", prom, "--stage", "canary")
    assert code == 0, out
    del doc["spec"]["stable"]
    path.write_text(yaml.safe_dump(doc))
    assert main(["analyze", "-f", str(path), "--prometheus", prom]) == 3
    assert "--stable-version" in capsys.readouterr().err
    code, out = run(capsys, "-f", str(path), "--prometheus", prom, "--stable-version", "v1")
    assert code == 0
    assert "shadow-agreement" in out  # no --stage: every gate


def test_dry_run_of_a_file_without_a_rollout_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("kind: ConfigMap\n")
    assert main(["analyze", "-f", str(path), "--prometheus", "http://127.0.0.1:1"]) == 3
    assert main(["analyze", "-f", str(tmp_path / "missing.yaml")]) == 3


def test_range_pools_every_series_and_an_unreachable_source_raises(prom: str) -> None:
    source = PrometheusSource(prom)
    assert source.range('latency_p99{version="v1"}', 600, 30) == pytest.approx(STEADY)
    assert source.range("nothing", 600, 30) == []
    with pytest.raises(SourceError):
        PrometheusSource("http://127.0.0.1:1", timeout=1).range("x", 60, 15)
