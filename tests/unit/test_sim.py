"""The simulated model servers and the traffic generator, without Kubernetes.

Model servers run in-process on loopback and are exercised over real HTTP; the
route-splitting and pairing logic is tested as pure functions on dict-shaped
objects; one test runs the generator end to end against two servers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrollout_devenv.sim import model_server as ms
from modelrollout_devenv.sim.traffic import (
    KubeRouteReader,
    Mirror,
    PairOutcome,
    Plan,
    Reply,
    Revisions,
    RouteNotFound,
    ShadowPairer,
    Split,
    TrafficGenerator,
    backend_for_version,
    normalize_host,
    parse_backends,
    plan_request,
    split_from_httproute,
    split_from_inferenceservice,
    split_from_service,
    split_from_virtualservice,
    version_from_storage_uri,
)

MODEL = "fraud-detector"
FEATURES = {"f0": 0.3, "f1": -1.2, "f2": 0.7}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# The loopback must not go through a proxy the environment may set.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ============================================================================ helpers


def http(
    method: str, url: str, doc: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=5) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body.decode()


def scrape(url: str) -> Samples:
    """Every sample of ``url``/metrics keyed by (sample name, sorted labels)."""
    status, text = http("GET", f"{url}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def predict(
    url: str, features: dict[str, float] = FEATURES, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    return http("POST", f"{url}/predict", {"features": features}, headers)


@pytest.fixture
def make_server() -> Iterator[Callable[..., ms.ModelServer]]:
    """Start in-process model servers (1 ms base latency) and stop them afterwards."""
    started: list[ms.ModelServer] = []

    def make(version: str = "v1", **kwargs: Any) -> ms.ModelServer:
        kwargs.setdefault("base_latency_ms", 1.0)
        kwargs.setdefault("seed", 7)
        server = ms.ModelServer(MODEL, version, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# ============================================================================ model server


def test_predict_answers_deterministically_and_echoes_the_request_id(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server("v2")
    status, first = predict(server.url, headers={"x-request-id": "req-1"})
    assert status == 200
    assert first["prediction"] in ms.CLASSES
    assert first["version"] == "v2"
    assert first["model"] == MODEL
    assert first["request_id"] == "req-1"
    assert 0.0 < first["score"] < 1.0
    _, second = predict(server.url, headers={"x-request-id": "req-2"})
    assert (second["prediction"], second["score"]) == (first["prediction"], first["score"])
    expected, _ = ms.predict(ms.version_weights(MODEL, "v2"), FEATURES)
    assert first["prediction"] == expected


def test_two_healthy_versions_agree_often_but_not_always() -> None:
    rng = random.Random(3)
    v1, v2 = ms.version_weights(MODEL, "v1"), ms.version_weights(MODEL, "v2")
    draws = [{n: rng.gauss(0, 1) for n in ms.FEATURE_NAMES} for _ in range(5000)]
    agree = sum(ms.predict(v1, f)[0] == ms.predict(v2, f)[0] for f in draws) / len(draws)
    assert 0.96 <= agree < 1.0
    classes = {ms.predict(v1, f)[0] for f in draws}
    assert classes == set(ms.CLASSES)


def test_bad_bodies_get_400_and_unknown_paths_404(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server()
    assert http("POST", f"{server.url}/predict", {"nope": 1})[0] == 400
    bad_feature = {"features": {"f0": 1.0, "f1": "x", "f2": 0.0}}
    assert http("POST", f"{server.url}/predict", bad_feature)[0] == 400
    assert http("GET", f"{server.url}/nowhere")[0] == 404
    assert http("GET", f"{server.url}/healthz") == (200, "ok\n")
    assert value(scrape(server.url), "model_requests_total", code="400") == 2


def test_faults_merge_validate_and_reset(make_server: Callable[..., ms.ModelServer]) -> None:
    server = make_server()
    assert http("GET", f"{server.url}/faults") == (200, ms.FAULT_DEFAULTS)
    status, faults = http("POST", f"{server.url}/faults", {"error_rate": 0.5})
    assert status == 200
    assert faults == {**ms.FAULT_DEFAULTS, "error_rate": 0.5}
    _, faults = http("POST", f"{server.url}/faults", {"latency_ms": 10})
    assert faults == {**ms.FAULT_DEFAULTS, "error_rate": 0.5, "latency_ms": 10.0}
    # all-or-nothing: a bad key or value changes nothing
    assert http("POST", f"{server.url}/faults", {"null_rate": 0.1, "typo": 1})[0] == 400
    assert http("POST", f"{server.url}/faults", {"error_rate": 1.5})[0] == 400
    assert http("POST", f"{server.url}/faults", {"input_shift": "big"})[0] == 400
    assert http("GET", f"{server.url}/faults")[1]["null_rate"] == 0.0
    assert http("DELETE", f"{server.url}/faults") == (200, ms.FAULT_DEFAULTS)


def test_error_fault_answers_500_and_counts_errors(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server()
    server.set_faults({"error_rate": 1.0})
    for _ in range(3):
        assert predict(server.url)[0] == 500
    assert predict(server.url, headers={"x-mirrored": "1"})[0] == 500
    s = scrape(server.url)
    assert value(s, "model_request_errors_total", mirrored="false") == 3
    assert value(s, "model_request_errors_total", mirrored="true") == 1
    assert value(s, "model_requests_total", code="500", mirrored="false") == 3
    assert value(s, "model_requests_total", code="200") == 0
    server.set_faults({"error_rate": 0.0})
    assert predict(server.url)[0] == 200


def test_null_and_skew_faults_change_the_answers(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server("v2")
    healthy = predict(server.url)[1]["prediction"]
    server.set_faults({"null_rate": 1.0})
    status, doc = predict(server.url)
    assert (status, doc["prediction"], doc["score"]) == (200, None, None)
    server.set_faults({"null_rate": 0.0, "prediction_skew": 1.0})
    skewed = {predict(server.url)[1]["prediction"] for _ in range(20)}
    assert healthy not in skewed
    assert skewed <= set(ms.ALL_CLASSES)
    s = scrape(server.url)
    assert value(s, "model_null_outputs_total") == 1
    assert value(s, "model_predictions_total") == 21  # the null answer has no class


def test_input_shift_moves_what_the_model_sees(make_server: Callable[..., ms.ModelServer]) -> None:
    server = make_server("v1")
    server.set_faults({"input_shift": 3.0})
    status, doc = predict(server.url)
    shifted = {k: v + 3.0 for k, v in FEATURES.items()}
    assert status == 200
    assert doc["prediction"] == ms.predict(ms.version_weights(MODEL, "v1"), shifted)[0]
    s = scrape(server.url)
    # f1 = -1.2 + 3 = 1.8 falls in (1.5, 2.5]: below 1.5 nothing, up to 2.5 one
    assert value(s, "model_input_feature_bucket", feature="f1", le="1.5") == 0
    assert value(s, "model_input_feature_bucket", feature="f1", le="2.5") == 1


def test_latency_fault_slows_requests_down(make_server: Callable[..., ms.ModelServer]) -> None:
    server = make_server()
    server.set_faults({"latency_ms": 120})
    started = time.perf_counter()
    assert predict(server.url)[0] == 200
    assert time.perf_counter() - started >= 0.1
    s = scrape(server.url)
    assert value(s, "model_request_duration_seconds_bucket", mirrored="false", le="0.1") == 0
    assert value(s, "model_request_duration_seconds_count", mirrored="false") == 1


def test_metrics_have_the_documented_names_labels_and_buckets(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server("v2")
    _, text = http("GET", f"{server.url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "model_request_duration_seconds": ("histogram", {"model", "version", "mirrored"}),
        "model_requests": ("counter", {"model", "version", "mirrored", "code"}),
        "model_request_errors": ("counter", {"model", "version", "mirrored"}),
        "model_input_feature": ("histogram", {"model", "version", "feature"}),
        "model_predictions": ("counter", {"model", "version", "class"}),
        "model_null_outputs": ("counter", {"model", "version"}),
        "model_labelled_feedback": ("counter", {"model", "version"}),
        "model_correct_predictions": ("counter", {"model", "version"}),
    }
    for name, (kind, labels) in expected.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no series before any request"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
            assert (sample.labels["model"], sample.labels["version"]) == (MODEL, "v2")
    s = scrape(server.url)
    for cls in ms.ALL_CLASSES:  # empty bins read 0, they are not missing
        assert (("class", cls), ("model", MODEL), ("version", "v2")) in {
            ls for (n, ls) in s if n == "model_predictions_total"
        }
    les = {dict(ls)["le"] for (n, ls) in s if n == "model_request_duration_seconds_bucket"}
    assert {float(x) for x in les} == {*ms.LATENCY_BUCKETS, float("inf")}
    f0_bins = [ls for (n, ls) in s if n == "model_input_feature_bucket" and ("feature", "f0") in ls]
    assert len(f0_bins) == 7


LLM_METRICS = {
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:generation_tokens": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
}


def test_llm_mode_exports_vllms_metrics_whose_counts_add_up(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    # Given a server in LLM mode with a fast first token
    server = make_server("v2", llm=True, ttft_ms=5.0, inter_token_ms=2.0, mean_output_tokens=8)
    # When it answers 20 requests
    for _ in range(20):
        assert predict(server.url)[0] == 200
    # Then vLLM's metric families are there, with model, version and model_name labels
    _, text = http("GET", f"{server.url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in LLM_METRICS.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == {"model", "version", "model_name"}
            assert sample.labels["model_name"] == MODEL
    # and one TTFT and queue time per request, one token gap per token after the first
    s = scrape(server.url)
    tokens = value(s, "vllm:generation_tokens_total", version="v2")
    assert value(s, "vllm:time_to_first_token_seconds_count") == 20
    assert value(s, "vllm:request_queue_time_seconds_count") == 20
    assert tokens >= 20
    for gaps in ("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds"):
        assert value(s, f"{gaps}_count") == tokens - 20
    assert 0.3 <= value(s, "vllm:kv_cache_usage_perc") <= 0.5


def test_without_llm_mode_no_vllm_metric_is_exported(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    server = make_server()
    predict(server.url)
    assert not [n for (n, _) in scrape(server.url) if n.startswith("vllm:")]


def test_a_ttft_fault_moves_the_first_token_past_the_limit_and_slows_the_answer(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    # Given an LLM server whose first token comes after about 5 ms
    server = make_server(llm=True, ttft_ms=5.0, inter_token_ms=1.0, mean_output_tokens=4)
    # When its TTFT regresses by 300 ms
    server.set_faults({"ttft_ms": 300})
    started = time.perf_counter()
    for _ in range(3):
        assert predict(server.url)[0] == 200
    # Then the client waited for each first token, and none came within 0.25 s
    assert time.perf_counter() - started >= 0.75
    s = scrape(server.url)
    assert value(s, "vllm:time_to_first_token_seconds_bucket", le="0.25") == 0
    assert value(s, "vllm:time_to_first_token_seconds_count") == 3


@pytest.mark.parametrize(
    ("update", "message"),
    [
        pytest.param({"ttft_ms": -1}, "ttft_ms must be in", id="negative-ttft"),
        pytest.param({"inter_token_ms": 1e9}, "inter_token_ms must be in", id="huge-gap"),
        pytest.param({"kv_cache_usage": 1.5}, "probability", id="cache-over-full"),
    ],
)
def test_llm_faults_are_validated(update: dict[str, float], message: str) -> None:
    with pytest.raises(ms.FaultError, match=message):
        ms.validate_faults(update)


def test_generations_have_the_configured_medians_and_mean_length() -> None:
    # Given 2000 simulated generations with a 20 ms regression of every token gap
    rng = random.Random(3)
    runs = [
        ms.simulate_generation(
            rng, ttft_ms=80, inter_token_ms=20, mean_output_tokens=32, inter_token_fault_ms=20
        )
        for _ in range(2000)
    ]
    # Then TTFT's median is near 80 ms, the queue a fifth of it, gaps near 40 ms
    ttft = sorted(g.ttft_s for g in runs)[1000]
    gaps = sorted(x for g in runs for x in g.token_gaps_s)
    assert 0.07 < ttft < 0.09
    assert all(abs(g.queue_s - ms.QUEUE_SHARE * g.ttft_s) < 1e-12 for g in runs)
    assert 0.037 < gaps[len(gaps) // 2] < 0.043
    # and answers are 32 tokens long on average, never empty
    mean = sum(g.output_tokens for g in runs) / len(runs)
    assert 29 < mean < 35
    assert min(g.output_tokens for g in runs) >= 1


def test_late_labels_arrive_after_the_delay_and_skew_hurts_accuracy(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    healthy = make_server("v1", label_fraction=1.0, label_delay_s=0.3)
    skewed = make_server("v2", label_fraction=1.0, label_delay_s=0.3)
    skewed.set_faults({"prediction_skew": 1.0})
    rng = random.Random(11)
    for _ in range(60):
        features = {n: rng.gauss(0, 1) for n in ms.FEATURE_NAMES}
        assert predict(healthy.url, features)[0] == 200
        assert predict(skewed.url, features)[0] == 200
    assert value(scrape(healthy.url), "model_labelled_feedback_total") < 60
    time.sleep(0.35)
    h, k = scrape(healthy.url), scrape(skewed.url)
    assert value(h, "model_labelled_feedback_total") == 60
    assert value(k, "model_labelled_feedback_total") == 60
    assert value(h, "model_correct_predictions_total") >= 48  # ~93 % expected
    assert value(k, "model_correct_predictions_total") <= 15  # skew = always wrong-ish


def test_cli_writes_the_port_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    devenv_dir = Path(ms.__file__).resolve().parents[2]  # devenv/modelrollout_devenv/sim/
    env = {
        **os.environ,
        "PYTHONPATH": f"{devenv_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "modelrollout_devenv.sim.model_server",
            "--model", MODEL, "--version", "v3", "--port", "0",
            "--port-file", str(port_file), "--seed", "1", "--base-latency-ms", "1",
            "--faults", '{"error_rate": 1.0}', "--max-seconds", "30",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert http("GET", f"{url}/healthz")[0] == 200
        assert predict(url)[0] == 500  # --faults applied at start
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# ============================================================================ routes → split

BACKENDS = {"fraud-detector-v1", "fraud-detector-v2"}


def httproute(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }


def test_httproute_weights_and_default_weight() -> None:
    route = httproute(
        [
            {"backendRefs": [{"name": "other-svc", "port": 80}]},
            {
                "name": "model",
                "backendRefs": [
                    {"name": "fraud-detector-v1", "port": 80, "weight": 90},
                    {"name": "fraud-detector-v2", "port": 80, "weight": 10},
                ],
            },
        ]
    )
    split = split_from_httproute(route, BACKENDS)
    assert split.weights == {"fraud-detector-v1": 90, "fraud-detector-v2": 10}
    assert split.mirrors == ()
    assert "rule model" in split.source
    default = httproute([{"backendRefs": [{"name": "fraud-detector-v1"}]}])
    assert split_from_httproute(default, BACKENDS).weights == {"fraud-detector-v1": 1}


def test_httproute_request_mirror_percent_fraction_and_default() -> None:
    def with_mirror(mirror: dict[str, Any]) -> Split:
        rule = {
            "backendRefs": [
                {"name": "fraud-detector-v1", "weight": 100},
                {"name": "fraud-detector-v2", "weight": 0},
            ],
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {}},
                {"type": "RequestMirror", "requestMirror": mirror},
            ],
        }
        return split_from_httproute(httproute([rule]), BACKENDS)

    ref = {"backendRef": {"name": "fraud-detector-v2", "port": 80}}
    assert with_mirror({**ref, "percent": 25}).mirrors == (Mirror("fraud-detector-v2", 25.0),)
    assert with_mirror(ref).mirror_percent("fraud-detector-v2") == 100.0
    fraction = {**ref, "fraction": {"numerator": 1, "denominator": 8}}
    assert with_mirror(fraction).mirror_percent("fraud-detector-v2") == 12.5
    assert with_mirror({**ref, "fraction": {"numerator": 30}}).mirrors[0].percent == 30.0
    assert with_mirror({**ref, "percent": 25}).shares() == {
        "fraud-detector-v1": 100.0,
        "fraud-detector-v2": 0.0,
    }


def test_httproute_rule_selection_and_foreign_refs() -> None:
    rules = [
        {"name": "a", "backendRefs": [{"name": "fraud-detector-v1", "weight": 1}]},
        {"name": "b", "backendRefs": [{"name": "fraud-detector-v2", "weight": 1}]},
    ]
    assert split_from_httproute(httproute(rules), BACKENDS, rule_name="b").weights == {
        "fraud-detector-v2": 1
    }
    foreign = httproute(
        [
            {
                "backendRefs": [
                    {"name": "fraud-detector-v1", "namespace": "elsewhere"},
                    {"name": "fraud-detector-v2", "kind": "ServiceImport", "group": "mcs"},
                ]
            }
        ]
    )
    split = split_from_httproute(foreign, BACKENDS)
    assert split.weights == {}
    assert "no rule" in split.source
    assert split_from_httproute({"spec": {}}, BACKENDS).weights == {}


def virtualservice(http_routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": {"hosts": ["fraud.example"], "http": http_routes},
    }


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("svc", "svc"),
        ("svc.ml", "svc"),
        ("svc.ml.svc", "svc"),
        ("svc.ml.svc.cluster.local", "svc"),
        ("svc.other.svc.cluster.local", "svc.other.svc.cluster.local"),
        ("api.example.com", "api.example.com"),
    ],
)
def test_istio_host_forms(host: str, expected: str) -> None:
    assert normalize_host(host, "ml") == expected


def test_virtualservice_weights_mirror_and_defaults() -> None:
    fqdn = "fraud-detector-v1.ml.svc.cluster.local"
    vs = virtualservice(
        [
            {"name": "other", "route": [{"destination": {"host": "unrelated"}}]},
            {
                "name": "model",
                "route": [
                    {"destination": {"host": fqdn}, "weight": 80},
                    {
                        "destination": {"host": "fraud-detector-v2", "port": {"number": 80}},
                        "weight": 20,
                    },
                ],
                "mirror": {"host": "fraud-detector-v2.ml.svc.cluster.local"},
                "mirrorPercentage": {"value": 12.5},
            },
        ]
    )
    split = split_from_virtualservice(vs, BACKENDS)
    assert split.weights == {"fraud-detector-v1": 80, "fraud-detector-v2": 20}
    assert split.mirrors == (Mirror("fraud-detector-v2", 12.5),)
    assert "http model" in split.source

    single = virtualservice(
        [
            {
                "route": [{"destination": {"host": "fraud-detector-v1"}}],
                "mirror": {"host": "fraud-detector-v2"},
            }
        ]
    )
    split = split_from_virtualservice(single, BACKENDS)
    assert split.weights == {"fraud-detector-v1": 100}  # a single destination takes all
    assert split.mirror_percent("fraud-detector-v2") == 100  # no mirrorPercentage: all

    unweighted = virtualservice(
        [
            {
                "route": [
                    {"destination": {"host": "fraud-detector-v1"}, "weight": 100},
                    {"destination": {"host": "fraud-detector-v2"}},
                ],
                "mirrors": [
                    {"destination": {"host": "fraud-detector-v2"}, "percentage": {"value": 5}}
                ],
            }
        ]
    )
    split = split_from_virtualservice(unweighted, BACKENDS)
    assert split.weights == {"fraud-detector-v1": 100, "fraud-detector-v2": 0}
    assert split.mirrors == (Mirror("fraud-detector-v2", 5.0),)


def test_virtualservice_subsets_route_name_and_no_match() -> None:
    vs = virtualservice(
        [
            {
                "name": "by-subset",
                "route": [
                    {"destination": {"host": "fraud-detector", "subset": "v1"}, "weight": 70},
                    {"destination": {"host": "fraud-detector", "subset": "v2"}, "weight": 30},
                ],
            }
        ]
    )
    split = split_from_virtualservice(vs, BACKENDS, route_name="by-subset")
    assert split.weights == {"fraud-detector-v1": 70, "fraud-detector-v2": 30}
    assert split_from_virtualservice(vs, BACKENDS, route_name="nope").weights == {}
    other_ns = virtualservice([{"route": [{"destination": {"host": "fraud-detector-v1.x.svc"}}]}])
    assert split_from_virtualservice(other_ns, BACKENDS).weights == {}


def deployment(
    name: str, labels: dict[str, str], status: dict[str, Any] | None, replicas: int = 1
) -> dict[str, Any]:
    dep: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": labels}}},
    }
    if status is not None:
        dep["status"] = status
    return dep


def service(selector: dict[str, str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": "fraud-detector", "namespace": "ml"}, "spec": spec}


DEPLOYMENTS = [
    deployment(
        "fraud-detector-v1",
        {"app": "fraud-detector", "version": "v1"},
        {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3},
    ),
    deployment(
        "fraud-detector-v2",
        {"app": "fraud-detector", "version": "v2"},
        {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1},
    ),
    deployment("other", {"app": "other", "version": "v1"}, {"readyReplicas": 5}),
]


def test_service_split_by_selector_and_ready_replicas() -> None:
    pinned = split_from_service(
        service({"app": "fraud-detector", "version": "v2"}), DEPLOYMENTS, BACKENDS
    )
    assert pinned.weights == {"fraud-detector-v2": 1}
    spanning = split_from_service(service({"app": "fraud-detector"}), DEPLOYMENTS, BACKENDS)
    assert spanning.weights == {"fraud-detector-v1": 3, "fraud-detector-v2": 1}
    assert spanning.shares() == {"fraud-detector-v1": 75.0, "fraud-detector-v2": 25.0}
    assert split_from_service(service(None), DEPLOYMENTS, BACKENDS).weights == {}


def test_service_ready_replicas_fallbacks_and_unmapped_versions() -> None:
    deps = [
        # controller wrote a status without readyReplicas: zero ready (field omitted)
        deployment("fraud-detector-v1", {"app": "f", "version": "v1"}, {"replicas": 2}, 2),
        # no status at all (no controller): spec.replicas
        deployment("fraud-detector-v2", {"app": "f", "version": "v2"}, None, 4),
        deployment("fraud-detector-v9", {"app": "f", "version": "v9"}, {"readyReplicas": 1}),
        deployment("fraud-detector-nover", {"app": "f"}, {"readyReplicas": 1}),
    ]
    split = split_from_service(service({"app": "f"}), deps, BACKENDS)
    assert split.weights == {
        "fraud-detector-v1": 0,
        "fraud-detector-v2": 4,
        "deployment/fraud-detector-v9": 1,
        "deployment/fraud-detector-nover": 1,
    }


def test_backend_for_version_rule() -> None:
    assert backend_for_version("fraud-detector", "v2", BACKENDS) == "fraud-detector-v2"
    assert backend_for_version("svc", "v1", {"model-a-v1", "model-a-v2"}) == "model-a-v1"
    assert backend_for_version("svc", "v1", {"a-v1", "b-v1"}) is None  # ambiguous
    assert backend_for_version("svc", "v1", {"svc-v1", "b-v1"}) == "svc-v1"
    assert backend_for_version("svc", "v3", BACKENDS) is None


def isvc(version: str, percent: int | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {"model": {"storageUri": f"gs://m/fraud-detector/{version}/"}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {"metadata": {"name": MODEL}, "spec": {"predictor": predictor}}


def test_storage_uri_template_finds_the_version_or_none() -> None:
    version_of = version_from_storage_uri("gs://m/fraud-detector/{version}/")
    assert version_of(isvc("v7")) == "v7"
    assert version_of({"spec": {"predictor": {"model": {"storageUri": "s3://x/v1/"}}}}) is None
    assert version_of({"spec": {}}) is None
    with pytest.raises(ValueError, match="no \\{version\\}"):
        version_from_storage_uri("gs://m/fixed")


def test_inferenceservice_split_follows_kserve_canary_and_its_rolled_out_memory() -> None:
    version_of = version_from_storage_uri("gs://m/fraud-detector/{version}/")

    def step(obj: dict[str, Any], mem: Revisions) -> tuple[dict[str, float], Revisions]:
        split, mem = split_from_inferenceservice(
            obj, BACKENDS, version_of=version_of, revisions=mem
        )
        return split.shares(), mem

    # first read, no percent: the latest takes all and is rolled out
    shares, mem = step(isvc("v1"), Revisions())
    assert (shares, mem) == ({"fraud-detector-v1": 100.0}, Revisions("v1", None))
    # a canary of v2 at 25%: v1 (rolled out) keeps the rest
    shares, mem = step(isvc("v2", 25), mem)
    assert shares == {"fraud-detector-v2": 25.0, "fraud-detector-v1": 75.0}
    assert mem == Revisions("v1", None)
    # a rollback (percent 0): all back on the rolled-out revision
    shares, _ = step(isvc("v2", 0), mem)
    assert shares == {"fraud-detector-v1": 100.0}
    # 100% rolls v2 out; dropping below 100 afterwards goes back to the previous one
    shares, mem = step(isvc("v2", 100), mem)
    assert (shares, mem) == ({"fraud-detector-v2": 100.0}, Revisions("v2", "v1"))
    shares, mem = step(isvc("v2", 0), mem)
    assert shares == {"fraud-detector-v1": 100.0}
    assert mem.rolled_out == "v1"
    # promotion (no percent): v2 rolled out for good
    shares, mem = step(isvc("v2"), mem)
    assert (shares, mem.rolled_out) == ({"fraud-detector-v2": 100.0}, "v2")


def test_inferenceservice_split_names_an_unknown_version_and_an_unreadable_spec() -> None:
    version_of = version_from_storage_uri("gs://m/fraud-detector/{version}/")
    split, _ = split_from_inferenceservice(
        isvc("v9", 10), BACKENDS, version_of=version_of, revisions=Revisions("v1")
    )
    assert split.weights == {"version/v9": 10.0, "fraud-detector-v1": 90.0}
    odd = {"metadata": {"name": MODEL}, "spec": {"predictor": {}}}
    split, mem = split_from_inferenceservice(
        odd, BACKENDS, version_of=version_of, revisions=Revisions("v1")
    )
    assert split.weights == {}
    assert mem == Revisions("v1")


# ============================================================================ plans


def test_plan_follows_weights_and_mirror_share_within_tolerance() -> None:
    split = Split(
        {"fraud-detector-v1": 90, "fraud-detector-v2": 10, "zero": 0},
        (Mirror("fraud-detector-v2", 30),),
    )
    rng = random.Random(1234)
    n = 20_000
    plans = [plan_request(split, rng) for _ in range(n)]
    to_v2 = sum(p.primary == "fraud-detector-v2" for p in plans)
    mirrored = sum(p.mirrors == ("fraud-detector-v2",) for p in plans)
    # 4 standard deviations: sqrt(n p (1-p)) is 42 for 10 % and 65 for 30 %
    assert abs(to_v2 - 0.10 * n) < 4 * 42
    assert abs(mirrored - 0.30 * n) < 4 * 65
    assert not any(p.primary == "zero" for p in plans)


def test_plan_without_weights_goes_nowhere_and_is_not_mirrored() -> None:
    split = Split({"a": 0}, (Mirror("b", 100),))
    assert plan_request(split, random.Random(1)) == Plan(None)
    assert plan_request(Split(), random.Random(1)) == Plan(None)
    full = plan_request(Split({"a": 1}, (Mirror("b", 100), Mirror("c", 0))), random.Random(1))
    assert full == Plan("a", ("b",))


def test_parse_backends() -> None:
    assert parse_backends('{"a-v1": "http://127.0.0.1:1"}') == {"a-v1": "http://127.0.0.1:1"}
    with pytest.raises(ValueError, match="non-empty"):
        parse_backends("{}")
    with pytest.raises(ValueError, match="strings"):
        parse_backends('{"a": 1}')


# ============================================================================ pairing


def ok(backend: str, version: str, prediction: str | None) -> Reply:
    return Reply(backend, True, 200, MODEL, version, prediction)


def test_pairing_agree_disagree_in_either_order() -> None:
    pairer = ShadowPairer()
    pairer.expect("r1", "fraud-detector-v2", deadline=10)
    assert pairer.primary("r1", ok("fraud-detector-v1", "v1", "approve")) == []
    assert pairer.mirror("r1", ok("fraud-detector-v2", "v2", "approve")) == [
        PairOutcome("agree", MODEL, "v2", "v1")
    ]
    pairer.expect("r2", "fraud-detector-v2", deadline=10)
    assert pairer.mirror("r2", ok("fraud-detector-v2", "v2", "reject")) == []
    assert pairer.primary("r2", ok("fraud-detector-v1", "v1", "approve")) == [
        PairOutcome("disagree", MODEL, "v2", "v1")
    ]
    assert len(pairer) == 0
    # a primary nobody mirrored is not tracked at all
    assert pairer.primary("r3", ok("fraud-detector-v1", "v1", "approve")) == []
    assert len(pairer) == 0


def test_pairing_unpaired_on_mirror_failure_or_timeout() -> None:
    pairer = ShadowPairer()
    pairer.expect("r1", "fraud-detector-v2", deadline=10)
    failed = Reply("fraud-detector-v2", False, 500, MODEL, "v2")
    assert pairer.mirror("r1", failed) == [PairOutcome("unpaired", MODEL, "v2")]
    assert pairer.primary("r1", ok("fraud-detector-v1", "v1", "approve")) == []

    pairer.expect("r2", "fraud-detector-v2", deadline=10)
    pairer.primary("r2", ok("fraud-detector-v1", "v1", "approve"))
    assert pairer.expire(now=9) == []
    # no answer at all: labels come from the Service name
    assert pairer.expire(now=10) == [PairOutcome("unpaired", MODEL, "v2")]
    # the late answer is ignored: it was already counted
    assert pairer.mirror("r2", ok("fraud-detector-v2", "v2", "approve")) == []


def test_pairing_ignores_failed_primaries_and_stays_bounded() -> None:
    pairer = ShadowPairer()
    pairer.expect("r1", "fraud-detector-v2", deadline=10)
    pairer.primary("r1", Reply("fraud-detector-v1", False))
    assert pairer.mirror("r1", ok("fraud-detector-v2", "v2", "approve")) == []
    pairer.expect("r2", "fraud-detector-v2", deadline=10)
    pairer.mirror("r2", ok("fraud-detector-v2", "v2", "approve"))
    assert pairer.expire(now=11) == []  # mirror answered, primary never did: nothing

    small = ShadowPairer(identity=lambda b: ("m", "vX"), max_pending=2)
    small.expect("a", "cand", 10)
    small.expect("b", "cand", 10)
    assert small.expect("c", "cand", 10) == [PairOutcome("unpaired", "m", "vX")]
    assert len(small) == 2


# ============================================================================ generator


class SplitBox:
    """A split source the test can change, like editing the route object."""

    def __init__(self, split: Split) -> None:
        self.split: Split | Exception = split
        self.calls = 0

    def __call__(self) -> Split:
        self.calls += 1
        if isinstance(self.split, Exception):
            raise self.split
        return self.split


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_generator_splits_mirrors_pairs_and_follows_route_changes(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    v1, v2 = make_server("v1"), make_server("v2")
    backends = {"fraud-detector-v1": v1.url, "fraud-detector-v2": v2.url}
    box = SplitBox(Split({"fraud-detector-v1": 100}, (Mirror("fraud-detector-v2", 100),)))
    gen = TrafficGenerator(box, backends, rate=150, seed=5, route_interval=0.1, max_seconds=20)
    port = gen.serve_metrics(0)
    gen.start()
    try:
        assert gen.last_split == box.split
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: value(scrape(url), "model_shadow_comparisons_total") >= 60)
        s = scrape(url)
        agree = value(s, "model_shadow_comparisons_total", result="agree", model=MODEL)
        total = value(
            s, "model_shadow_comparisons_total", stable_version="v1", candidate_version="v2"
        )
        assert agree / total >= 0.85
        assert value(s, "traffic_requests_sent_total", backend="fraud-detector-v2", mirrored="true")
        assert not value(
            s, "traffic_requests_sent_total", backend="fraud-detector-v2", mirrored="false"
        )
        assert value(s, "traffic_route_reads_total", result="ok") >= 1
        v2_metrics = scrape(v2.url)
        assert value(v2_metrics, "model_requests_total", mirrored="true", code="200") > 0
        assert value(v2_metrics, "model_requests_total", mirrored="false") == 0
        assert http("GET", f"{url}/split")[1]["shares"] == {"fraud-detector-v1": 100.0}

        # the route changes: canary 50/50, no mirror; a failing candidate
        box.split = Split({"fraud-detector-v1": 50, "fraud-detector-v2": 50})
        wait_until(lambda: gen.last_split == box.split)
        before = value(scrape(v2.url), "model_requests_total", mirrored="false")
        wait_until(
            lambda: value(scrape(v2.url), "model_requests_total", mirrored="false") > before + 20
        )
    finally:
        gen.stop()
    assert not gen.running


def test_generator_counts_unpaired_when_the_candidate_fails(
    make_server: Callable[..., ms.ModelServer],
) -> None:
    v1, v2 = make_server("v1"), make_server("v2")
    v2.set_faults({"error_rate": 1.0})
    backends = {"fraud-detector-v1": v1.url, "fraud-detector-v2": v2.url}
    split = Split({"fraud-detector-v1": 1}, (Mirror("fraud-detector-v2", 100),))
    gen = TrafficGenerator(SplitBox(split), backends, rate=100, seed=1, max_seconds=10)
    gen.start()
    try:
        wait_until(lambda: value(scrape_registry(gen), "model_shadow_unpaired_total") >= 20)
        s = scrape_registry(gen)
        assert value(s, "model_shadow_unpaired_total", model=MODEL, candidate_version="v2") >= 20
        assert value(s, "model_shadow_comparisons_total") == 0
        assert value(s, "traffic_request_failures_total", reason="http_error", mirrored="true")
    finally:
        gen.stop()


def scrape_registry(gen: TrafficGenerator) -> Samples:
    from prometheus_client import generate_latest

    text = generate_latest(gen.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_generator_route_errors_not_found_and_unknown_backends() -> None:
    box = SplitBox(Split({"ghost-v1": 1}))
    backends = {"fraud-detector-v1": "http://127.0.0.1:9"}
    gen = TrafficGenerator(box, backends, rate=200, seed=2, route_interval=0.05, max_seconds=10)
    gen.start()
    try:
        wait_until(
            lambda: (
                value(
                    scrape_registry(gen), "traffic_request_failures_total", reason="unknown_backend"
                )
                > 5
            )
        )
        box.split = RuntimeError("API server down")
        wait_until(
            lambda: value(scrape_registry(gen), "traffic_route_reads_total", result="error") > 0
        )
        assert gen.last_split == Split({"ghost-v1": 1})  # the last good split stays
        box.split = RouteNotFound("gone")
        wait_until(
            lambda: (
                value(scrape_registry(gen), "traffic_request_failures_total", reason="no_route") > 5
            )
        )
        assert gen.last_split is not None
        assert gen.last_split.weights == {}
    finally:
        gen.stop()


def test_generator_stops_by_itself_after_max_seconds() -> None:
    gen = TrafficGenerator(SplitBox(Split()), {"a-v1": "http://127.0.0.1:9"}, max_seconds=0.3)
    gen.start()
    assert gen.wait(timeout=5)
    gen.stop()


def test_generator_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="http://"):
        TrafficGenerator(SplitBox(Split()), {"a": "127.0.0.1:80"})
    with pytest.raises(ValueError, match="rate"):
        TrafficGenerator(SplitBox(Split()), {"a": "http://127.0.0.1:80"}, rate=-1)


# ============================================================================ the API reader


def test_kube_route_reader_reads_typed_objects_as_dicts(tmp_path: Path) -> None:
    """The Service router gets typed client objects; they must read as the wire dicts."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    reader = KubeRouteReader(
        kubeconfig=str(kubeconfig),
        namespace="ml",
        router="service",
        route="fraud-detector",
        backends=BACKENDS,
    )

    def typed_deployment(version: str, ready: int) -> client.V1Deployment:
        labels = {"app": "fraud-detector", "version": version}
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(name=f"fraud-detector-{version}"),
            spec=client.V1DeploymentSpec(
                replicas=ready,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels)),
            ),
            status=client.V1DeploymentStatus(
                observed_generation=1, replicas=ready, ready_replicas=ready
            ),
        )

    class Core:
        def read_namespaced_service(self, name: str, ns: str, **_: Any) -> client.V1Service:
            return client.V1Service(
                metadata=client.V1ObjectMeta(name=name, namespace=ns),
                spec=client.V1ServiceSpec(selector={"app": "fraud-detector"}),
            )

    class Apps:
        def list_namespaced_deployment(self, ns: str, **_: Any) -> client.V1DeploymentList:
            return client.V1DeploymentList(
                items=[typed_deployment("v1", 2), typed_deployment("v2", 2)]
            )

    class Missing:
        def get_namespaced_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
            raise ApiException(status=404, reason="Not Found")

    reader._core, reader._apps, reader._custom = Core(), Apps(), Missing()  # type: ignore[assignment]
    try:
        assert reader().shares() == {"fraud-detector-v1": 50.0, "fraud-detector-v2": 50.0}
        reader.router = "gatewayAPI"
        with pytest.raises(RouteNotFound):
            reader()
    finally:
        reader.close()


def test_generator_config_endpoint_changes_rate_and_shift() -> None:
    gen = TrafficGenerator(SplitBox(Split()), {"a-v1": "http://127.0.0.1:9"}, max_seconds=5)
    url = f"http://127.0.0.1:{gen.serve_metrics(0)}"
    try:
        assert http("POST", f"{url}/config", {"rate": 0, "feature_shift": 1.5})[0] == 200
        assert http("POST", f"{url}/config", {"rate": -1})[0] == 400
        assert http("POST", f"{url}/config", {"speed": 1})[0] == 400
        assert http("GET", f"{url}/split") == (200, None)  # no route read yet
        assert http("GET", f"{url}/healthz")[0] == 200
    finally:
        gen.stop()
