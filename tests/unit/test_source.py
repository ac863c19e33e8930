"""What a Prometheus answer may bring back into a status, and where credentials go.

Servers on loopback play Prometheus, a hostile server and a trap that records
every request it gets. An error message carries the HTTP status, Prometheus's
``errorType`` and a bounded ``bad_data`` parse error, never a response body; a
redirect is never followed; a token goes to its own address only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelrollout.analysis.policy import Allowed, Credentials, PrometheusPolicy, Refused
from modelrollout.analysis.source import (
    ERROR_TEXT_LIMIT,
    IncompleteAnswer,
    PrometheusSource,
    QueryRefused,
    SourceError,
    SourceUnreachable,
)
from modelrollout.operator.handlers import RunConfig, source_of
from modelrollout.operator.metrics import OperatorMetrics

SECRET_BODY = "<html>internal admin page: db password hunter2</html>"
ONE_SAMPLE = {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1.5"]}]}
OK = (200, "application/json", json.dumps({"status": "success", "data": ONE_SAMPLE}))


def fresh(*, age: float = 0.0, **extra: Any) -> tuple[int, str, str]:
    """A successful answer with one sample stamped ``age`` seconds ago (Prometheus: now)."""
    data = {"resultType": "vector", "result": [{"metric": {}, "value": [time.time() - age, "1.5"]}]}
    return 200, "application/json", json.dumps({"status": "success", "data": data, **extra})


@dataclass
class Server:
    """A loopback HTTP server answering every GET with ``answer(path)``; it records requests."""

    answer: Callable[[str], tuple[int, str, str] | tuple[int, str, str, dict[str, str]]]
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append({"path": self.path, **dict(self.headers.items())})
                status, ctype, body, *extra = server.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for key, value in (extra[0] if extra else {}).items():
                    self.send_header(key, value)
                data = body.encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str], tuple[int, str, str]], host: str = "127.0.0.1") -> Server:
        server = Server(answer)
        httpd = ThreadingHTTPServer((host, 0), server.handler())
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        started.append(httpd)
        server.url = f"http://{host}:{httpd.server_address[1]}"
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _json(status: int, body: object) -> tuple[int, str, str]:
    return status, "application/json", json.dumps(body)


PARSE_ERROR = "1:5: parse error: unexpected identifier \x1b[31m" + "x" * 1000


@pytest.mark.parametrize(
    ("answer", "error", "said", "not_said"),
    [
        pytest.param(
            _json(400, {"status": "error", "errorType": "bad_data", "error": PARSE_ERROR}),
            QueryRefused,
            "HTTP 400 bad_data: 1:5: parse error: unexpected identifier",
            "\x1b",
            id="bad-data-quotes-the-parse-error-cleaned",
        ),
        pytest.param(
            _json(422, {"status": "error", "errorType": "execution", "error": SECRET_BODY}),
            QueryRefused,
            "HTTP 422 execution",
            "hunter2",
            id="execution-error-is-refused-without-its-text",
        ),
        pytest.param(
            (400, "text/html", SECRET_BODY),
            SourceUnreachable,
            "HTTP 400",
            "hunter2",
            id="an-html-400-is-not-quoted",
        ),
        pytest.param(
            _json(503, {"status": "error", "errorType": "timeout", "error": SECRET_BODY}),
            SourceUnreachable,
            "HTTP 503 timeout",
            "hunter2",
            id="a-5xx-is-unreachable",
        ),
        pytest.param(
            (500, "text/plain", SECRET_BODY),
            SourceUnreachable,
            "HTTP 500",
            "hunter2",
            id="a-plain-500-is-not-quoted",
        ),
        pytest.param(
            (401, "text/plain", SECRET_BODY),
            SourceUnreachable,
            "HTTP 401",
            "hunter2",
            id="an-auth-error-is-the-sources-not-the-querys",
        ),
        pytest.param(
            (200, "text/html", SECRET_BODY),
            SourceUnreachable,
            "not a Prometheus API answer",
            "hunter2",
            id="a-200-that-is-not-prometheus",
        ),
        pytest.param(
            _json(200, {"status": "error", "errorType": SECRET_BODY * 3}),
            SourceUnreachable,
            "HTTP 200",
            "hunter2",
            id="an-odd-error-type-is-bounded",
        ),
    ],
)
def test_an_error_answer_becomes_a_short_reason_and_never_its_body(
    serve: Callable[..., Server],
    answer: tuple[int, str, str],
    error: type[SourceError],
    said: str,
    not_said: str,
) -> None:
    server = serve(lambda _: answer)
    with pytest.raises(SourceError) as caught:
        PrometheusSource(server.url, timeout=2).instant("up")
    assert type(caught.value) is error
    message = str(caught.value)
    assert said in message
    assert not_said not in message
    assert (
        len(message) <= len(f"prometheus at {server.url}: HTTP 400 bad_data: ") + ERROR_TEXT_LIMIT
    )


def test_an_unreachable_address_says_so_in_a_few_words() -> None:
    with pytest.raises(SourceUnreachable, match=r"connection refused$"):
        PrometheusSource("http://127.0.0.1:1", timeout=1).instant("up")


def test_a_redirect_is_not_followed_so_no_credentials_travel(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    # Given a trap on another host name, and a Prometheus that redirects to it
    trap = serve(lambda _: OK, host="localhost")
    redirecting = serve(lambda path: (302, "text/plain", "", {"Location": trap.url + path}))
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    allowed = Allowed(redirecting.url, Credentials(token_file=str(token)))
    # When the operator asks it
    with pytest.raises(SourceUnreachable, match="redirect; not followed"):
        source_of(allowed, RunConfig()).instant("up")
    # Then the redirecting server got the token (it is the allowed one), the trap nothing
    assert redirecting.requests[0]["Authorization"] == "Bearer s3cret"
    assert trap.requests == []


def test_each_address_gets_its_own_credentials_and_a_refused_one_gets_no_request(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    # Given the default Prometheus with a token, another allowed one with basic auth,
    # and a trap nobody allowed
    default, other, trap = (serve(lambda _: fresh()) for _ in range(3))
    (tmp_path / "token").write_text("default-token")
    (tmp_path / "basic").write_text("user:pw")
    cfg = RunConfig(
        prometheus=default.url,
        prometheus_credentials={
            default.url: Credentials(token_file=str(tmp_path / "token")),
            other.url + "/": Credentials(basic_auth_file=str(tmp_path / "basic")),
        },
    )
    policy = PrometheusPolicy(cfg.prometheus, credentials=cfg.prometheus_credentials)
    sources = {a.url: source_of(a, cfg) for a in policy.allowed}
    # When rollouts name each of them
    for address in (None, other.url, trap.url):
        answer = policy.resolve(address)
        if not isinstance(answer, Refused):
            assert sources[answer.url].instant("up")[0].value == 1.5
    # Then each got its own credentials, and the trap no request at all
    assert default.requests[0]["Authorization"] == "Bearer default-token"
    assert other.requests[0]["Authorization"].startswith("Basic ")
    assert "default-token" not in json.dumps(other.requests)
    assert trap.requests == []


def test_query_errors_are_counted_by_kind(serve: Callable[..., Server]) -> None:
    metrics = OperatorMetrics()
    bad = serve(lambda _: _json(400, {"status": "error", "errorType": "bad_data", "error": "x"}))
    for url in (bad.url, "http://127.0.0.1:1"):
        with pytest.raises(SourceError):
            PrometheusSource(url, timeout=1, observe=metrics.observe_query).instant("up")

    def count(kind: str) -> float | None:
        return metrics.registry.get_sample_value(
            "modelrollout_prometheus_query_errors_total", {"kind": kind}
        )

    assert (count("refused"), count("unreachable")) == (1, 1)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        pytest.param(
            lambda: fresh(warnings=["remote store \x1b[31mshard-2 unavailable"]),
            "partial answer (remote store [31mshard-2 unavailable)", id="partial-with-warnings",
        ),
        pytest.param(lambda: fresh(age=600), "stale samples (600s old)", id="stale-samples"),
    ],
)  # fmt: skip
def test_an_answer_that_is_partial_or_stale_is_incomplete_and_counted_so(
    serve: Callable[..., Server], reply: Callable[[], tuple[int, str, str]], said: str
) -> None:
    metrics = OperatorMetrics()
    server = serve(lambda _: reply())
    source = PrometheusSource(server.url, stale_after=120, observe=metrics.observe_query)
    with pytest.raises(IncompleteAnswer) as caught:
        source.instant("up")
    assert said in str(caught.value)
    assert "\x1b" not in str(caught.value)
    kind = {"kind": "incomplete"}
    assert (
        metrics.registry.get_sample_value("modelrollout_prometheus_query_errors_total", kind) == 1
    )


def test_a_fresh_answer_passes_the_staleness_check_and_carries_its_time(
    serve: Callable[..., Server],
) -> None:
    server = serve(lambda _: fresh(age=5))
    [sample] = PrometheusSource(server.url, stale_after=120).instant("up")
    assert sample.value == 1.5
    assert sample.at is not None
    assert time.time() - sample.at < 60


def test_a_prometheus_slower_than_the_timeout_is_said_to_time_out(
    serve: Callable[..., Server],
) -> None:
    def slow(_: str) -> tuple[int, str, str]:
        time.sleep(1.5)
        return fresh()

    source = PrometheusSource(serve(slow).url, timeout=0.5)
    with pytest.raises(SourceUnreachable, match=r"timed out after 0\.5s"):
        source.instant("up")
