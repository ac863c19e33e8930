"""Notifications from the real operator process to a real HTTP receiver on loopback.

The receiver (``http.server`` in a thread of the test) checks each webhook's
HMAC signature and records what arrived, in order. The rollouts here have no
gates, so they run in seconds and need no model servers: what is under test
is what leaves the operator, not the analysis.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelrollout.notify.format import DECISIONS, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import wait_for

from .world import World

pytestmark = pytest.mark.e2e

KEY = "e2e-signing-key"
QUICK: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 60}]}
}
NO_GATES: dict[str, Any] = {"interval": "5s", "metrics": []}


class Receiver:
    """Records every POST; answers 503 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.got: list[tuple[str, dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    code = 503 if len(receiver.got) < receiver.fail_first else 200
                    # HTTP header names are case-insensitive: keep them lower-case.
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.got.append((self.path, headers, body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def taken(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b, code in self.got if p == path and code == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def secret(ns: str, **data: str) -> dict[str, Any]:
    """Secret modelrollout-notifications, as the namespace's admin writes it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "modelrollout-notifications", "namespace": ns},
        "stringData": data,
    }


def decisions_of(world: World, name: str) -> list[str]:
    """The decisions the rollout's Events stand for, in the order they were posted."""
    return [DECISIONS[r].value for r in world.reasons(name) if r in DECISIONS]


def test_a_promoted_rollout_is_told_to_every_receiver_signed_and_in_decision_order(
    world: World, receiver: Receiver
) -> None:
    # Given the namespace's receivers in Secret modelrollout-notifications, and the operator
    world.apply(*m.model_objects("told", world.ns))
    world.apply(
        secret(
            world.ns,
            **{
                "hook-url": f"{receiver.url}/webhook",
                "hook-key": KEY,
                "chat-url": f"{receiver.url}/slack",
                "ce-url": f"{receiver.url}/ce",
            },
        )
    )
    world.operator()
    notifications = [
        {"webhook": {"urlKey": "hook-url", "signingSecretKey": "hook-key"}},
        {"slack": {"urlKey": "chat-url"}},
        {"cloudEvents": {"urlKey": "ce-url", "mode": "structured", "signingSecretKey": "hook-key"}},
    ]
    # When a rollout that names them runs to promotion
    world.apply(
        m.rollout("told", world.ns, strategy=QUICK, analysis=NO_GATES, notifications=notifications)
    )
    world.wait_phase("told", "Succeeded", timeout=90)
    wait_for(lambda: len(receiver.taken("/ce")) >= 4, 20, "the last CloudEvent")
    wait_for(lambda: len(receiver.taken("/webhook")) >= 4, 20, "the last webhook")
    wait_for(lambda: len(receiver.taken("/slack")) >= 4, 20, "the last Slack message")
    # Then the webhook got every decision, each signed over its body with the Secret's key
    hooks = receiver.taken("/webhook")
    for headers, body in hooks:
        assert verify(body, KEY.encode(), headers.get(SIGNATURE_HEADER.lower())), body
        assert json.loads(body)["sentAt"] == int(headers[TIMESTAMP_HEADER.lower()])
    data = [json.loads(body) for _, body in hooks]
    # in the order they were decided, as the rollout's Events tell them
    expected = decisions_of(world, "told")
    assert expected == ["started", "step", "step", "promoted"]
    assert [d["decision"] for d in data] == expected
    assert [d["sequence"] for d in data] == [1, 2, 3, 4]
    assert data[-1]["rollout"]["name"] == "told"
    assert data[-1]["stableVersion"] == "v2"
    # and the Slack and CloudEvents receivers got the same decisions in the same order
    texts = [json.loads(body)["text"] for _, body in receiver.taken("/slack")]
    assert [t.split()[2] for t in texts] == expected
    ces = receiver.taken("/ce")
    events = [(h, json.loads(b)) for h, b in ces]
    assert [e["type"] for _, e in events] == [f"io.modelrollout.{d}" for d in expected]
    assert all(h["content-type"] == "application/cloudevents+json" for h, _ in events)
    assert all(verify(b, KEY.encode(), h.get(SIGNATURE_HEADER.lower())) for h, b in ces)
    assert {e["source"] for _, e in events} == {
        f"/apis/modelrollout.io/v1alpha1/namespaces/{world.ns}/modelrollouts/told"
    }
    assert [e["id"] for _, e in events] == [d["id"] for d in data]
    assert "NotificationFailed" not in world.reasons("told")


def test_a_receiver_that_fails_at_first_gets_every_message_by_retries_in_order(
    world: World,
) -> None:
    # Given a receiver that answers 503 to its first three requests
    receiver = Receiver(fail_first=3)
    try:
        world.apply(*m.model_objects("retried", world.ns))
        world.apply(secret(world.ns, url=f"{receiver.url}/webhook", key=KEY))
        world.operator(extra=["--notification-backoff", "200ms", "--notification-retries", "5"])
        # When a rollout runs to promotion
        world.apply(
            m.rollout(
                "retried",
                world.ns,
                strategy=QUICK,
                analysis=NO_GATES,
                notifications=[{"webhook": {"urlKey": "url", "signingSecretKey": "key"}}],
            )
        )
        world.wait_phase("retried", "Succeeded", timeout=90)
        wait_for(lambda: len(receiver.taken("/webhook")) >= 4, 30, "every message")
        # Then every decision arrived once, in order, after the failed attempts were retried
        taken = [json.loads(b) for _, b in receiver.taken("/webhook")]
        assert [d["decision"] for d in taken] == ["started", "step", "step", "promoted"]
        assert len(receiver.got) == len(taken) + 3
        first = json.loads(receiver.got[0][2])
        assert first["id"] == taken[0]["id"], "the retried message is the same message"
        assert "NotificationFailed" not in world.reasons("retried")
    finally:
        receiver.close()


def test_a_receiver_that_is_down_is_a_warning_event_and_the_rollout_still_completes(
    world: World,
) -> None:
    # Given a receiver URL where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world.apply(*m.model_objects("unheard", world.ns))
    world.apply(secret(world.ns, url=f"http://127.0.0.1:{port}/hook", key=KEY))
    world.operator(extra=["--notification-backoff", "100ms", "--notification-retries", "2"])
    # When a rollout runs
    world.apply(
        m.rollout(
            "unheard",
            world.ns,
            strategy=QUICK,
            analysis=NO_GATES,
            notifications=[{"webhook": {"urlKey": "url", "signingSecretKey": "key"}}],
        )
    )
    # Then it completes as if nothing were wrong
    world.wait_phase("unheard", "Succeeded", timeout=90)

    # and each lost message is a Warning Event on the rollout that says why, without the URL
    def failed() -> list[dict[str, Any]]:
        return [e for e in world.events("unheard") if e["reason"] == "NotificationFailed"]

    wait_for(lambda: len(failed()) >= 4, 30, "a NotificationFailed Event per decision")
    for event in failed():
        assert event["type"] == "Warning"
        assert "after 3 attempts" in event["message"]
        assert str(port) not in event["message"]
    assert "promoted (Promoted)" in failed()[-1]["message"]
