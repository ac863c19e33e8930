"""A tenant plays against the operator: nothing a tenant writes reaches the operator's secrets.

Whoever may create a ModelRollout in one namespace chooses
``spec.analysis.prometheus.address``. Traps on loopback record every request
they get; the operator runs as in production, with a bearer token for its own
Prometheus. A trap the cluster admin did not allow gets no request at all, the
rollout says why, and nothing a server sends comes back in the status.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelrollout_devenv import manifests as m

from .world import World

pytestmark = pytest.mark.e2e

MARKER = "TRAP-CONTENT-7f3a"
OPERATOR_TOKEN = "operator-default-token-2c91"
TEAM_TOKEN = "team-prometheus-token-81d0"
PROBE_ANALYSIS = {
    "interval": "2s",
    "inconclusiveLimit": 3,
    "metrics": [{"name": "probe", "query": "up", "max": 1}],
}
ONE_STEP = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}


class Trap:
    """An HTTP server on loopback that records every request and answers with ``MARKER``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                trap.requests.append({"path": self.path, **dict(self.headers.items())})
                body = f"<html><body>{MARKER} internal page</body></html>".encode()
                self.send_response(500)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def traps() -> Iterator[Callable[[], Trap]]:
    started: list[Trap] = []

    def start() -> Trap:
        started.append(Trap())
        return started[-1]

    yield start
    for trap in started:
        trap.close()


def _token_file(tmp_path: Path, name: str, token: str) -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    return path


def _given_a_model(world: World, model: str) -> None:
    """The route, Services and Deployments of v1 and v2: enough for the operator to act on."""
    world.apply(*m.model_objects(model, world.ns))


def test_a_rollout_naming_an_address_nobody_allowed_sends_it_nothing_and_says_why(
    world: World, traps: Callable[[], Trap], tmp_path: Path
) -> None:
    # Given the operator with a token for its own Prometheus, and a trap on loopback
    trap = traps()
    token = _token_file(tmp_path, "token", OPERATOR_TOKEN)
    world.operator(extra=["--prometheus-token-file", str(token)])
    # When a tenant points one rollout at the trap, and another at a look-alike of the
    # operator's own Prometheus that really names the trap (userinfo trick)
    _given_a_model(world, "direct")
    _given_a_model(world, "lookalike")
    prom_hostport = world.prometheus.url.split("://", 1)[1].rstrip("/")
    lookalike = f"http://{prom_hostport}@127.0.0.1:{trap.port}"
    for name, address in (("direct", trap.url), ("lookalike", lookalike)):
        analysis = {**PROBE_ANALYSIS, "prometheus": {"address": address}}
        world.apply(m.rollout(name, world.ns, strategy=ONE_STEP, analysis=analysis))
    # Then each rollout fails, saying the address is not allowed and who can allow it
    for name in ("direct", "lookalike"):
        status = world.wait_phase(name, "Failed", timeout=30)
        assert "not allowed by the operator's policy" in status["message"]
        assert "--prometheus-allow" in status["message"]
        assert "prometheus.allowedAddresses" in status["message"]
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "PrometheusNotAllowed")
        warnings = [e for e in world.events(name) if e["reason"] == "PrometheusNotAllowed"]
        assert warnings
        assert warnings[0]["type"] == "Warning"
        # and no traffic moved to the candidate
        assert world.route_backends(name) == {f"{name}-v1": 100}
    # and, a few ticks later, the trap has still not been asked anything
    time.sleep(4)
    assert trap.requests == []
    for name in ("direct", "lookalike"):
        assert MARKER not in json.dumps(world.status(name))
    # and `kubectl get mro` shows the reason in its MESSAGE column
    table = world.cluster.kubectl("get", "mro", "direct", "-n", world.ns).stdout
    assert "MESSAGE" in table.splitlines()[0]
    assert "not allowed by the operator's policy" in table


def test_an_allowed_address_gets_its_own_token_and_an_unlisted_one_gets_nothing(
    world: World, traps: Callable[[], Trap], tmp_path: Path
) -> None:
    # Given a team's Prometheus the cluster admin allowed with its own token, and
    # another server nobody allowed; the operator also holds its own token
    team, stranger = traps(), traps()
    operator_token = _token_file(tmp_path, "operator-token", OPERATOR_TOKEN)
    team_token = _token_file(tmp_path, "team-token", TEAM_TOKEN)
    world.operator(
        extra=[
            "--prometheus-token-file", str(operator_token),
            "--prometheus-credentials", f"{team.url}/,token-file={team_token}",
        ]
    )  # fmt: skip
    # When one rollout names the team's Prometheus and another the stranger
    for name, url in (("team", team.url), ("stranger", stranger.url)):
        _given_a_model(world, name)
        analysis = {**PROBE_ANALYSIS, "prometheus": {"address": url}}
        world.apply(m.rollout(name, world.ns, strategy=ONE_STEP, analysis=analysis))
    # Then the team's Prometheus is asked (the preflight of the gate's query), with the
    # team's token and never the operator's
    status = world.wait_status(
        "team",
        lambda s: "HTTP 500" in s.get("message", ""),
        60,
        "the preflight of the team's rollout to report the team's Prometheus",
    )
    assert team.requests, "the allowed address was queried"
    assert {r.get("Authorization") for r in team.requests} == {f"Bearer {TEAM_TOKEN}"}
    assert all(OPERATOR_TOKEN not in json.dumps(r) for r in team.requests)
    # and, as it answers 500, the candidate waits with no traffic, and its HTML error
    # page is reduced to a status code in the status
    assert status["phase"] == "Pending", status
    assert world.route_backends("team") == {"team-v1": 100}
    assert MARKER not in json.dumps(world.status("team"))
    # and the stranger is refused and never asked, with any token or none
    world.wait_phase("stranger", "Failed", timeout=30)
    assert stranger.requests == []
