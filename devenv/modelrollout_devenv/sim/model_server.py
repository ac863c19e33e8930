"""A simulated model server: one process per model version, metrics like a real one.

Why a simulation rather than a real model: the operator never looks inside a
model. It reads latency, errors, input and output distributions, late-label
accuracy (all scraped by Prometheus) and, in shadow, whether the candidate
agrees with stable. This server produces those signals with realistic shape and
lets a test or a demo break one of them on purpose through ``/faults``, so every
gate of the analysis can be driven to pass or to fail on demand.

The model
    Three standard-normal features ``f0 f1 f2`` go into a linear score with one
    interaction term; two thresholds cut the score into ``approve``,
    ``review`` and ``reject``. Each version's weights are a fixed reference plus
    a small perturbation seeded by ``model/version`` (a "retrain"), so two
    healthy versions agree on about 97-99 % of requests: realistic, high, not
    identical. The prediction is a pure function of the features: the same
    request gets the same answer from the same version, whatever ``--seed``.

Late labels
    For ``--label-fraction`` of requests the ground truth "arrives"
    ``--label-delay-s`` later. Ground truth is the reference function of the
    *true* features (before any ``input_shift`` fault) plus a little noise, so
    a healthy version scores about 90-95 % and a skewed or shifted one less.

Faults (``GET``/``POST /faults``; ``POST`` merges, ``DELETE`` resets)
    ``latency_ms``       added to every request's service time.
    ``error_rate``       probability of an HTTP 500.
    ``input_shift``      added to every feature the model *sees* (a
                         preprocessing bug): recorded inputs and predictions
                         move, ground truth does not.
    ``prediction_skew``  probability to replace the prediction by a wrong class
                         (one of the other classes or ``UNKNOWN``).
    ``null_rate``        probability to answer ``{"prediction": null}``.
    ``ttft_ms``          (LLM mode) added to every request's time to first token.
    ``inter_token_ms``   (LLM mode) added to every interval between output tokens.
    ``kv_cache_usage``   (LLM mode) the KV-cache usage gauge's level, 0-1 (default 0.4).

LLM mode (``--llm``)
    Every request is also an LLM generation, exported under vLLM's metric names
    (``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds`` and
    ``vllm:inter_token_latency_seconds``, ``vllm:request_queue_time_seconds``,
    ``vllm:generation_tokens_total``, ``vllm:prompt_tokens_total``,
    ``vllm:gpu_cache_usage_perc`` and ``vllm:kv_cache_usage_perc``) with the
    ``model``/``version`` labels and vLLM's own ``model_name``. Timing is streaming-like:
    a queue wait, a prefill, then one interval per output token, each drawn lognormal
    around ``--ttft-ms``, ``--inter-token-ms``; the request waits its time to first token
    for real (what a streaming client sees first), the decode is recorded, not slept, so
    a few threads keep up with the traffic generator.

Run: ``python -m modelrollout_devenv.sim.model_server --model fraud-detector
--version v2 --port 0 --port-file PATH``. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import math
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

FEATURE_NAMES: tuple[str, ...] = ("f0", "f1", "f2")
CLASSES: tuple[str, ...] = ("approve", "review", "reject")
UNKNOWN_CLASS = "UNKNOWN"
ALL_CLASSES: tuple[str, ...] = (*CLASSES, UNKNOWN_CLASS)

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Bin edges for standard-normal inputs: 7 bins (with +Inf) of comparable mass,
#: enough for a PSI / chi-square drift check on bucket counts.
FEATURE_BUCKETS: tuple[float, ...] = (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)

#: Reference weights of the "true" model; versions perturb them slightly.
REFERENCE_WEIGHTS: tuple[float, ...] = (1.2, -0.8, 0.5)
REFERENCE_INTERACTION = 0.3  # weight of f0*f1
REFERENCE_BIAS = 0.0
#: Score thresholds: below the first ``approve``, below the second ``review``.
THRESHOLDS: tuple[float, float] = (0.5, 1.5)

#: vLLM-like buckets for time to first token and queue time (seconds).
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: vLLM-like buckets for the interval between output tokens (seconds).
INTER_TOKEN_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
#: Share of a request's time to first token spent waiting in the scheduler's queue.
QUEUE_SHARE = 0.2
MAX_OUTPUT_TOKENS = 512

MAX_FAULT_LATENCY_MS = 60_000.0
MAX_PENDING_LABELS = 100_000


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelWeights:
    """The parameters of one version: linear weights, an interaction, a bias."""

    weights: tuple[float, ...]
    interaction: float
    bias: float

    def score(self, features: Mapping[str, float]) -> float:
        """The raw score; a pure function of the features."""
        x = [features.get(name, 0.0) for name in FEATURE_NAMES]
        linear = sum(w * v for w, v in zip(self.weights, x, strict=True))
        return linear + self.interaction * x[0] * x[1] + self.bias


REFERENCE_MODEL = ModelWeights(REFERENCE_WEIGHTS, REFERENCE_INTERACTION, REFERENCE_BIAS)


def classify(score: float) -> str:
    """Cut a score into one of the three real classes."""
    if score < THRESHOLDS[0]:
        return CLASSES[0]
    if score < THRESHOLDS[1]:
        return CLASSES[1]
    return CLASSES[2]


def probability(score: float) -> float:
    """A fraud "probability" for the response: a logistic squash centred on the top cut."""
    return 1.0 / (1.0 + math.exp(-(score - THRESHOLDS[1])))


def version_weights(model: str, version: str, noise: float = 0.015) -> ModelWeights:
    """The weights of ``model/version``: the reference plus a version-seeded perturbation.

    Seeded by a hash of the names (not Python's salted ``hash``), so the same
    version is the same model in every process and every run.
    """
    digest = hashlib.sha256(f"{model}/{version}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    weights = tuple(w + rng.gauss(0.0, noise) for w in REFERENCE_WEIGHTS)
    interaction = REFERENCE_INTERACTION + rng.gauss(0.0, noise)
    bias = REFERENCE_BIAS + rng.gauss(0.0, noise)
    return ModelWeights(weights, interaction, bias)


def predict(weights: ModelWeights, features: Mapping[str, float]) -> tuple[str, float]:
    """Healthy prediction of a version: ``(class, probability)``."""
    s = weights.score(features)
    return classify(s), probability(s)


# ----------------------------------------------------------------------------- faults

FAULT_DEFAULTS: dict[str, float] = {
    "latency_ms": 0.0,
    "error_rate": 0.0,
    "input_shift": 0.0,
    "prediction_skew": 0.0,
    "null_rate": 0.0,
    "ttft_ms": 0.0,
    "inter_token_ms": 0.0,
    "kv_cache_usage": 0.4,
}
_PROBABILITY_FAULTS = frozenset({"error_rate", "prediction_skew", "null_rate", "kv_cache_usage"})
_LATENCY_FAULTS = frozenset({"latency_ms", "ttft_ms", "inter_token_ms"})


class FaultError(ValueError):
    """A ``/faults`` update that names an unknown key or holds an out-of-range value."""


def validate_faults(update: Mapping[str, Any]) -> dict[str, float]:
    """Check a partial fault update and return it as floats; ``FaultError`` when bad.

    All-or-nothing: one bad key rejects the whole update, so a typo never
    leaves a half-applied fault behind.
    """
    clean: dict[str, float] = {}
    for key, value in update.items():
        if key not in FAULT_DEFAULTS:
            raise FaultError(f"unknown fault {key!r}; known: {', '.join(FAULT_DEFAULTS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultError(f"fault {key!r} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise FaultError(f"fault {key!r} must be finite")
        if key in _PROBABILITY_FAULTS and not 0.0 <= v <= 1.0:
            raise FaultError(f"fault {key!r} is a probability in [0, 1], got {v}")
        if key in _LATENCY_FAULTS and not 0.0 <= v <= MAX_FAULT_LATENCY_MS:
            raise FaultError(f"{key} must be in [0, {MAX_FAULT_LATENCY_MS:g}], got {v}")
        clean[key] = v
    return clean


# ----------------------------------------------------------------------------- metrics


class ServerMetrics:
    """The server's Prometheus metrics on a private registry.

    A private registry keeps several in-process servers (as in the unit tests)
    from colliding, and keeps Python process metrics out of the scrape.
    Every series a gate reads is created at zero up front: a ratio over a
    series that does not exist yet is "no data", and an empty class bin must
    read 0, not be missing, for drift checks to compare like with like.
    """

    def __init__(self, model: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        base = ["model", "version"]
        r = self.registry
        self.duration = Histogram(
            "model_request_duration_seconds",
            "Time to answer a prediction request, as the server measures it.",
            [*base, "mirrored"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "model_requests_total",
            "Prediction requests by HTTP status code.",
            [*base, "mirrored", "code"],
            registry=r,
        )
        self.errors = Counter(
            "model_request_errors_total",
            "Prediction requests that failed with a server error (5xx).",
            [*base, "mirrored"],
            registry=r,
        )
        self.input_feature = Histogram(
            "model_input_feature",
            "Input feature values as the model sees them (after preprocessing).",
            [*base, "feature"],
            buckets=FEATURE_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "model_predictions_total",
            "Predictions by class.",
            [*base, "class"],
            registry=r,
        )
        self.null_outputs = Counter(
            "model_null_outputs_total",
            "Answers that carried no prediction.",
            base,
            registry=r,
        )
        self.labelled = Counter(
            "model_labelled_feedback_total",
            "Predictions whose ground truth has arrived (late labels).",
            base,
            registry=r,
        )
        self.correct = Counter(
            "model_correct_predictions_total",
            "Labelled predictions that matched the ground truth.",
            base,
            registry=r,
        )
        mv = (model, version)
        for mirrored in ("false", "true"):
            self.duration.labels(*mv, mirrored)
            self.errors.labels(*mv, mirrored)
            for code in ("200", "500"):
                self.requests.labels(*mv, mirrored, code)
        for feature in FEATURE_NAMES:
            self.input_feature.labels(*mv, feature)
        for cls in ALL_CLASSES:
            self.predictions.labels(*mv, cls)
        self.null_outputs.labels(*mv)
        self.labelled.labels(*mv)
        self.correct.labels(*mv)


class LlmMetrics:
    """vLLM's metric names, for the LLM serving gates (docs/analysis.md, LLM serving gates).

    Labelled ``model`` and ``version`` (as a scrape config relabels them) and
    ``model_name`` (vLLM's own). Both names of the inter-token histogram and of the
    KV-cache gauge are exported, older and newer vLLM's.
    """

    def __init__(self, registry: CollectorRegistry, model: str, version: str) -> None:
        names = ["model", "version", "model_name"]
        r = registry
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token (queue + prefill).",
            names,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Time a request waited in the scheduler's queue.",
            names,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = [
            Histogram(
                name, "Time between output tokens.", names, buckets=INTER_TOKEN_BUCKETS, registry=r
            )
            for name in ("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds")
        ]
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated (output) tokens.", names, registry=r
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt (input) tokens.", names, registry=r
        )
        self.kv_cache = [
            Gauge(name, "Share of the KV cache in use, 0-1.", names, registry=r)
            for name in ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
        ]
        self.labels = (model, version, model)
        for metric in (
            self.ttft,
            self.queue,
            *self.inter_token,
            self.generation_tokens,
            self.prompt_tokens,
            *self.kv_cache,
        ):
            metric.labels(*self.labels)

    def record(self, generation: Generation, kv_cache_usage: float) -> None:
        """One finished generation: its timing, its tokens and the cache level now."""
        lv = self.labels
        self.queue.labels(*lv).observe(generation.queue_s)
        self.ttft.labels(*lv).observe(generation.ttft_s)
        for hist in self.inter_token:
            child = hist.labels(*lv)
            for gap in generation.token_gaps_s:
                child.observe(gap)
        self.generation_tokens.labels(*lv).inc(generation.output_tokens)
        self.prompt_tokens.labels(*lv).inc(generation.prompt_tokens)
        for gauge in self.kv_cache:
            gauge.labels(*lv).set(kv_cache_usage)


@dataclass(frozen=True)
class Generation:
    """The timing of one simulated streamed generation."""

    queue_s: float
    ttft_s: float
    """Queue wait plus prefill: when the first token reaches the client."""
    token_gaps_s: tuple[float, ...]
    """One interval per output token after the first."""
    prompt_tokens: int

    @property
    def output_tokens(self) -> int:
        return len(self.token_gaps_s) + 1


def simulate_generation(
    rng: random.Random,
    *,
    ttft_ms: float,
    inter_token_ms: float,
    mean_output_tokens: float,
    ttft_fault_ms: float = 0.0,
    inter_token_fault_ms: float = 0.0,
) -> Generation:
    """Draw one generation: lognormal TTFT and token gaps, a geometric number of tokens.

    The TTFT's median is ``ttft_ms`` (``QUEUE_SHARE`` of it queue wait) plus the fault;
    each gap's median ``inter_token_ms`` plus its fault; the output length is geometric
    with mean ``mean_output_tokens`` (at least 1, at most ``MAX_OUTPUT_TOKENS``).
    """
    base = ttft_ms / 1000.0 * rng.lognormvariate(0.0, 0.35)
    queue = base * QUEUE_SHARE
    ttft = base + ttft_fault_ms / 1000.0 * rng.lognormvariate(0.0, 0.1)
    p = 1.0 / max(1.0, mean_output_tokens)
    tokens = 1
    while tokens < MAX_OUTPUT_TOKENS and rng.random() > p:
        tokens += 1
    gaps = tuple(
        inter_token_ms / 1000.0 * rng.lognormvariate(0.0, 0.25) + inter_token_fault_ms / 1000.0
        for _ in range(tokens - 1)
    )
    return Generation(queue, ttft, gaps, prompt_tokens=rng.randint(16, 256))


# ----------------------------------------------------------------------------- the server


class BadRequest(ValueError):
    """A ``/predict`` body the server cannot use (answered with HTTP 400)."""


def parse_features(body: bytes) -> dict[str, float]:
    """The model's features from a ``/predict`` body; ``BadRequest`` when unusable.

    Every feature the model uses must be present and numeric; unknown extra
    features are ignored (and not recorded, to keep label cardinality fixed).
    """
    try:
        doc = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, dict):
        raise BadRequest('body must be {"features": {"f0": number, ...}}')
    out: dict[str, float] = {}
    for name in FEATURE_NAMES:
        value = features.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"feature {name!r} missing or not a number")
        if not math.isfinite(value):
            raise BadRequest(f"feature {name!r} is not finite")
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class Answer:
    """What one ``/predict`` call produced: HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


class ModelServer:
    """One model version behind HTTP on 127.0.0.1, usable in-process or as a CLI.

    In-process use (tests)::

        server = ModelServer("fraud-detector", "v2", base_latency_ms=1)
        server.start()
        ... server.url ...
        server.stop()
    """

    def __init__(
        self,
        model: str,
        version: str,
        *,
        port: int = 0,
        seed: int | None = None,
        base_latency_ms: float = 20.0,
        label_delay_s: float = 5.0,
        label_fraction: float = 0.3,
        model_noise: float = 0.015,
        label_noise: float = 0.15,
        llm: bool = False,
        ttft_ms: float = 80.0,
        inter_token_ms: float = 20.0,
        mean_output_tokens: float = 64.0,
    ) -> None:
        if not 0.0 <= label_fraction <= 1.0:
            raise ValueError("label_fraction must be in [0, 1]")
        if base_latency_ms < 0 or label_delay_s < 0:
            raise ValueError("base_latency_ms and label_delay_s must be >= 0")
        self.model = model
        self.version = version
        self.base_latency_s = base_latency_ms / 1000.0
        self.label_delay_s = label_delay_s
        self.label_fraction = label_fraction
        self.label_noise = label_noise
        self.weights = version_weights(model, version, model_noise)
        self.metrics = ServerMetrics(model, version)
        self.llm = LlmMetrics(self.metrics.registry, model, version) if llm else None
        self.ttft_ms = ttft_ms
        self.inter_token_ms = inter_token_ms
        self.mean_output_tokens = mean_output_tokens
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._faults = dict(FAULT_DEFAULTS)
        self._faults_lock = threading.Lock()
        # Late labels waiting to "arrive": (due monotonic time, sequence, correct?).
        self._labels: list[tuple[float, int, bool]] = []
        self._labels_seq = 0
        self._labels_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((HOST, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a daemon thread; returns at once (the socket is already bound)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"model-server-{self.model}-{self.version}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    # -- faults ------------------------------------------------------------------------

    def faults(self) -> dict[str, float]:
        """A copy of the faults in force."""
        with self._faults_lock:
            return dict(self._faults)

    def set_faults(self, update: Mapping[str, Any]) -> dict[str, float]:
        """Merge a partial update (validated all-or-nothing); returns the full dict."""
        clean = validate_faults(update)
        with self._faults_lock:
            self._faults.update(clean)
            current = dict(self._faults)
        log.info("%s/%s faults now %s", self.model, self.version, current)
        return current

    def reset_faults(self) -> dict[str, float]:
        with self._faults_lock:
            self._faults = dict(FAULT_DEFAULTS)
            return dict(self._faults)

    # -- requests ----------------------------------------------------------------------

    def _uniform(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def _service_time(self, fault_latency_ms: float) -> float:
        """Base latency with lognormal jitter (median = base) plus the fault latency."""
        with self._rng_lock:
            jitter = self._rng.lognormvariate(0.0, 0.35)
            fault_jitter = self._rng.lognormvariate(0.0, 0.1)
        return self.base_latency_s * jitter + fault_latency_ms / 1000.0 * fault_jitter

    def _generation(self, faults: Mapping[str, float]) -> Generation:
        with self._rng_lock:
            return simulate_generation(
                self._rng,
                ttft_ms=self.ttft_ms,
                inter_token_ms=self.inter_token_ms,
                mean_output_tokens=self.mean_output_tokens,
                ttft_fault_ms=faults["ttft_ms"],
                inter_token_fault_ms=faults["inter_token_ms"],
            )

    def _jitter(self, sigma: float) -> float:
        with self._rng_lock:
            return self._rng.lognormvariate(0.0, sigma)

    def _ground_truth(self, true_features: Mapping[str, float]) -> str:
        with self._rng_lock:
            noise = self._rng.gauss(0.0, self.label_noise)
        return classify(REFERENCE_MODEL.score(true_features) + noise)

    def _wrong_class(self, right: str) -> str:
        choices = [c for c in ALL_CLASSES if c != right]
        with self._rng_lock:
            return self._rng.choice(choices)

    def handle_predict(self, body: bytes, request_id: str, mirrored: bool) -> Answer:
        """Answer one prediction request and record its metrics.

        Separate from the HTTP handler so the whole request path (faults,
        metrics, late labels) is one readable function.
        """
        started = time.perf_counter()
        mv = (self.model, self.version)
        m_label = "true" if mirrored else "false"
        ident = {"model": self.model, "version": self.version, "request_id": request_id}
        self.pump_labels()
        try:
            true_features = parse_features(body)
        except BadRequest as exc:
            self.metrics.requests.labels(*mv, m_label, "400").inc()
            self.metrics.duration.labels(*mv, m_label).observe(time.perf_counter() - started)
            return Answer(HTTPStatus.BAD_REQUEST, {"error": str(exc), **ident})

        faults = self.faults()
        seen = {k: v + faults["input_shift"] for k, v in true_features.items()}
        for name, value in seen.items():
            self.metrics.input_feature.labels(*mv, name).observe(value)

        generation = self._generation(faults) if self.llm is not None else None
        service = self._service_time(faults["latency_ms"])
        time.sleep(service + (generation.ttft_s if generation else 0.0))

        if faults["error_rate"] > 0 and self._uniform() < faults["error_rate"]:
            self.metrics.requests.labels(*mv, m_label, "500").inc()
            self.metrics.errors.labels(*mv, m_label).inc()
            self.metrics.duration.labels(*mv, m_label).observe(time.perf_counter() - started)
            return Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "injected fault", **ident})

        prediction: str | None
        score: float | None
        if faults["null_rate"] > 0 and self._uniform() < faults["null_rate"]:
            prediction, score = None, None
            self.metrics.null_outputs.labels(*mv).inc()
        else:
            prediction, score = predict(self.weights, seen)
            if faults["prediction_skew"] > 0 and self._uniform() < faults["prediction_skew"]:
                prediction = self._wrong_class(prediction)
            self.metrics.predictions.labels(*mv, prediction).inc()

        if self.label_fraction > 0 and self._uniform() < self.label_fraction:
            self._schedule_label(prediction == self._ground_truth(true_features))

        if self.llm is not None and generation is not None:
            self.llm.record(generation, min(1.0, faults["kv_cache_usage"] * self._jitter(0.05)))
        self.metrics.requests.labels(*mv, m_label, "200").inc()
        self.metrics.duration.labels(*mv, m_label).observe(time.perf_counter() - started)
        return Answer(
            HTTPStatus.OK,
            {
                "prediction": prediction,
                "score": None if score is None else round(score, 6),
                **ident,
            },
        )

    # -- late labels -------------------------------------------------------------------

    def _schedule_label(self, correct: bool) -> None:
        with self._labels_lock:
            if len(self._labels) >= MAX_PENDING_LABELS:
                heapq.heappop(self._labels)  # bounded memory: the oldest label is lost
            self._labels_seq += 1
            due = time.monotonic() + self.label_delay_s
            heapq.heappush(self._labels, (due, self._labels_seq, correct))

    def pump_labels(self) -> int:
        """Count the labels that have "arrived" by now; returns how many.

        Called on every request and every scrape instead of from a timer
        thread: the counters are only ever observed through a scrape, so they
        are exact whenever anyone looks, and there is no extra thread to stop.
        """
        now = time.monotonic()
        arrived: list[bool] = []
        with self._labels_lock:
            while self._labels and self._labels[0][0] <= now:
                arrived.append(heapq.heappop(self._labels)[2])
        if arrived:
            mv = (self.model, self.version)
            self.metrics.labelled.labels(*mv).inc(len(arrived))
            self.metrics.correct.labels(*mv).inc(sum(arrived))
        return len(arrived)

    def scrape(self) -> bytes:
        """The Prometheus text exposition of this server's metrics."""
        self.pump_labels()
        return generate_latest(self.metrics.registry)


def read_body(handler: BaseHTTPRequestHandler, limit: int = 1 << 20) -> bytes:
    """The request body; empty when Content-Length is missing, bad or over ``limit``."""
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return b""
    return handler.rfile.read(length) if 0 < length <= limit else b""


def _handler_for(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one ``ModelServer``."""

    class Handler(_Handler):
        model_server: ClassVar[ModelServer] = server

    return Handler


class JsonHandler(BaseHTTPRequestHandler):
    """What the simulators' small HTTP APIs share: quiet access logs and JSON answers."""

    server_version = "modelrollout-sim/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Route the access log to ``logging`` at DEBUG: 20 lines a second is noise."""
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode())


class _Handler(JsonHandler):
    model_server: ClassVar[ModelServer]

    def _read_body(self) -> bytes:
        return read_body(self)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, self.model_server.scrape(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        elif path == "/faults":
            self._send_json(HTTPStatus.OK, self.model_server.faults())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path == "/predict":
            rid = self.headers.get("x-request-id") or str(uuid.uuid4())
            mirrored = (self.headers.get("x-mirrored") or "").lower() in ("1", "true")
            answer = self.model_server.handle_predict(body, rid, mirrored)
            self._send_json(answer.status, answer.body)
        elif path == "/faults":
            try:
                update = json.loads(body or b"{}")
                if not isinstance(update, dict):
                    raise FaultError("body must be a JSON object")
                self._send_json(HTTPStatus.OK, self.model_server.set_faults(update))
            except (FaultError, json.JSONDecodeError) as exc:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route {path}"})

    def do_DELETE(self) -> None:
        if self.path.split("?", 1)[0] == "/faults":
            self._send_json(HTTPStatus.OK, self.model_server.reset_faults())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})


# ----------------------------------------------------------------------------- CLI


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write the port atomically, so a reader polling the file never sees half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_stop_signals(stop: threading.Event) -> None:
    """Make SIGTERM and SIGINT set ``stop`` so the main thread can shut down cleanly.

    ``serve_forever`` runs in a thread and the main thread only waits: calling
    ``shutdown()`` from a handler on the serving thread would deadlock.
    """

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def wait_for_stop(stop: threading.Event, max_seconds: float) -> None:
    """Block until SIGTERM/SIGINT or ``max_seconds``: a forgotten process ends by itself."""
    install_stop_signals(stop)
    if not stop.wait(timeout=max_seconds if max_seconds > 0 else None):
        log.info("ran for --max-seconds=%g: stopping", max_seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelrollout_devenv.sim.model_server",
        description="Serve one simulated model version on 127.0.0.1.",
    )
    p.add_argument("--model", required=True, help="model name (label `model`)")
    p.add_argument("--version", required=True, help="version (label `version`), e.g. v2")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    p.add_argument("--port-file", help="write the bound port here (atomically)")
    p.add_argument("--seed", type=int, help="seed for latency, faults and labels")
    p.add_argument("--base-latency-ms", type=float, default=20.0, help="median service time")
    p.add_argument("--label-delay-s", type=float, default=5.0, help="late-label delay")
    p.add_argument(
        "--label-fraction", type=float, default=0.3, help="share of requests that get a label"
    )
    p.add_argument(
        "--model-noise",
        type=float,
        default=0.015,
        help="size of the version-seeded weight perturbation (0: identical to the reference)",
    )
    p.add_argument("--llm", action="store_true", help="also export vLLM's LLM metrics")
    p.add_argument("--ttft-ms", type=float, default=80.0, help="LLM: median time to first token")
    p.add_argument(
        "--inter-token-ms", type=float, default=20.0, help="LLM: median time between tokens"
    )
    p.add_argument(
        "--mean-output-tokens", type=float, default=64.0, help="LLM: mean tokens per answer"
    )
    p.add_argument(
        "--faults", default="{}", help='initial faults as JSON, e.g. {"error_rate": 0.2}'
    )
    p.add_argument(
        "--max-seconds", type=float, default=21600.0, help="exit after this long (0: never)"
    )
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A process of its own: drop the ``*_created`` series, which only add noise to the
    # scrape (done here, not at import, because it is global to prometheus_client).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s model-server {args.model}/{args.version} %(levelname)s %(message)s",
    )
    server = ModelServer(
        args.model,
        args.version,
        port=args.port,
        seed=args.seed,
        base_latency_ms=args.base_latency_ms,
        label_delay_s=args.label_delay_s,
        label_fraction=args.label_fraction,
        model_noise=args.model_noise,
        llm=args.llm,
        ttft_ms=args.ttft_ms,
        inter_token_ms=args.inter_token_ms,
        mean_output_tokens=args.mean_output_tokens,
    )
    try:
        initial = json.loads(args.faults)
        if not isinstance(initial, dict):
            raise FaultError("must be a JSON object")
        server.set_faults(initial)
    except (FaultError, json.JSONDecodeError) as exc:
        server.stop()
        raise SystemExit(f"--faults: {exc}") from None
    server.start()
    if args.port_file:
        write_port_file(args.port_file, server.port)
    log.info("serving %s/%s on %s", args.model, args.version, server.url)
    try:
        wait_for_stop(threading.Event(), args.max_seconds)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
