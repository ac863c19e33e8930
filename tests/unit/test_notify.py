"""Notifications: what each receiver gets, byte for byte, and how the sender behaves.

The sender is driven with a fake transport (a plain function, as httpx's
MockTransport), a fake Secret reader and a recording event sink; sleeping is
recorded, not done.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from modelrollout.api.notifications import CloudEventsMode, Notification, NotifiedDecision
from modelrollout.engine import Event, EventType
from modelrollout.notify.format import (
    DECISIONS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notice,
    Outgoing,
    Target,
    notice_for,
    render,
    sign,
    verify,
)
from modelrollout.operator.notify import NotDelivered, Notifier, Settings, load_defaults

NOW = datetime(2026, 1, 1, 12, 0, 0)
BODY: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "fraud", "uid": "u-1"}}
STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "stage": "canary",
    "stableVersion": "v1",
    "candidateVersion": "v2",
    "weights": {"stable": 75, "candidate": 25},
}
KEY = b"s3cr3t"


def notice(reason: str = "Promoted", message: str = "promoted v2") -> Notice:
    n = notice_for(
        Event(EventType.NORMAL, reason, message),
        body=BODY,
        status=STATUS,
        now=NOW,
        sequence=7,
        id="id-7",
    )
    assert n is not None
    return n


# ------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("reason", "decision"),
    [
        pytest.param("RolloutStarted", NotifiedDecision.STARTED, id="started"),
        pytest.param("CandidateReplaced", NotifiedDecision.STARTED, id="replaced"),
        pytest.param("WeightChanged", NotifiedDecision.STEP, id="weight"),
        pytest.param("Switched", NotifiedDecision.STEP, id="blue-green-switch"),
        pytest.param("Paused", NotifiedDecision.PAUSED, id="paused"),
        pytest.param("AnalysisInconclusive", NotifiedDecision.INCONCLUSIVE, id="inconclusive"),
        pytest.param("RolledBack", NotifiedDecision.ROLLED_BACK, id="rolled-back"),
        pytest.param("Aborted", NotifiedDecision.ROLLED_BACK, id="aborted"),
        pytest.param("Promoted", NotifiedDecision.PROMOTED, id="promoted"),
        pytest.param("Invalid", NotifiedDecision.FAILED, id="failed"),
    ],
)
def test_event_reasons_map_to_decisions(reason: str, decision: NotifiedDecision) -> None:
    assert DECISIONS[reason] == decision


@pytest.mark.parametrize("reason", ["Approved", "RequestIgnored", "TrafficDrift", "Waiting"])
def test_events_that_are_no_decision_are_not_sent(reason: str) -> None:
    event = Event(EventType.NORMAL, reason, "x")
    assert notice_for(event, body=BODY, status=STATUS, now=NOW, sequence=1, id="i") is None


def test_every_decision_is_reachable_from_some_event_reason() -> None:
    assert set(DECISIONS.values()) == set(NotifiedDecision)


# ---------------------------------------------------------------------- the payloads


def test_a_webhook_gets_signed_json_whose_signature_covers_the_send_time() -> None:
    out = render(Target("webhook", "http://x", KEY), notice(), sent_at=1767268800)
    assert out.headers[SIGNATURE_HEADER] == sign(out.body, KEY)
    assert verify(out.body, KEY, out.headers[SIGNATURE_HEADER])
    assert not verify(out.body + b" ", KEY, out.headers[SIGNATURE_HEADER])
    assert not verify(out.body, b"other", out.headers[SIGNATURE_HEADER])
    assert out.headers[TIMESTAMP_HEADER] == "1767268800"
    data = json.loads(out.body)
    assert data["sentAt"] == 1767268800, "the body carries the timestamp the signature covers"
    assert data == data | {
        "id": "id-7",
        "sequence": 7,
        "decision": "promoted",
        "reason": "Promoted",
        "severity": "Normal",
        "message": "promoted v2",
        "time": "2026-01-01T12:00:00Z",
        "rollout": {"namespace": "ml", "name": "fraud", "uid": "u-1"},
        "candidateVersion": "v2",
        "candidateWeight": 25,
    }


def test_the_signature_is_hmac_sha256_of_the_raw_body_in_hex() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    assert sign(body, KEY) == "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_slack_gets_one_line_of_text() -> None:
    out = render(Target("slack", "http://x"), notice(), sent_at=1)
    assert json.loads(out.body) == {
        "text": ":white_check_mark: *ml/fraud* promoted (v2, weight 25%): promoted v2"
    }
    assert SIGNATURE_HEADER not in out.headers


def test_a_binary_cloudevent_puts_its_attributes_in_headers() -> None:
    out = render(Target("cloudEvents", "http://x"), notice("RolledBack"), sent_at=1)
    assert out.headers["ce-specversion"] == "1.0"
    assert out.headers["ce-type"] == "io.modelrollout.rolledback"
    assert (
        out.headers["ce-source"]
        == "/apis/modelrollout.io/v1alpha1/namespaces/ml/modelrollouts/fraud"
    )
    assert out.headers["ce-id"] == "id-7"
    assert out.headers["ce-time"] == "2026-01-01T12:00:00Z"
    assert out.headers["Content-Type"] == "application/json"
    assert json.loads(out.body)["decision"] == "rolledback"


def test_a_structured_cloudevent_is_one_json_document_and_may_be_signed() -> None:
    target = Target("cloudEvents", "http://x", KEY, CloudEventsMode.STRUCTURED)
    out = render(target, notice("WeightChanged", "weight 10% -> 25%"), sent_at=1)
    assert out.headers["Content-Type"] == "application/cloudevents+json"
    assert not any(h.startswith("ce-") for h in out.headers)
    event = json.loads(out.body)
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.modelrollout.step"
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["message"] == "weight 10% -> 25%"
    assert verify(out.body, KEY, out.headers[SIGNATURE_HEADER])


# ------------------------------------------------------------------------- the sender


class Events:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def emit(self, body: dict[str, Any], event: Event) -> None:
        self.seen.append(event)


class Secrets:
    def __init__(self, data: dict[str, bytes] | None) -> None:
        self.data = data
        self.reads = 0

    def read(self, namespace: str) -> dict[str, bytes]:
        self.reads += 1
        if self.data is None:
            raise LookupError(f"Secret {namespace}/modelrollout-notifications not found")
        return self.data


class Receiver:
    """A transport that answers from a script of status codes (an exception: no answer)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.got: list[tuple[str, Outgoing]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, out: Outgoing, timeout: float) -> int:
        with self.lock:
            self.got.append((url, out))
            answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer

    def decisions(self) -> list[str]:
        return [json.loads(out.body)["decision"] for _, out in self.got]


SECRET = {"hook": b"http://hooks.example/x\n", "key": KEY, "slack": b"http://slack.example/y"}
WEBHOOK = Notification.model_validate({"webhook": {"urlKey": "hook", "signingSecretKey": "key"}})


def sender(receiver: Receiver, **kw: Any) -> tuple[Notifier, Events, list[float]]:
    events, slept = Events(), []
    settings = kw.pop("settings", Settings(retries=3, backoff=1.0, workers=2))
    n = Notifier(
        events=events,
        secrets=kw.pop("secrets", Secrets(SECRET)),
        settings=settings,
        transport=receiver,
        sleep=slept.append,
        jitter=lambda: 0.5,
        **kw,
    ).start()
    return n, events, slept


def submit(n: Notifier, *reasons: str, receivers: list[Notification] | None = None) -> None:
    evs = [Event(EventType.NORMAL, r, r) for r in reasons]
    n.submit(BODY, [WEBHOOK] if receivers is None else receivers, STATUS, evs, NOW)


def test_messages_of_a_rollout_arrive_in_decision_order_with_growing_sequence() -> None:
    rx = Receiver()
    n, events, _ = sender(rx)
    submit(n, "RolloutStarted", "WeightChanged", "Approved", "WeightChanged")
    submit(n, "Promoted")
    assert n.wait_idle(5)
    assert rx.decisions() == ["started", "step", "step", "promoted"]
    assert [json.loads(o.body)["sequence"] for _, o in rx.got] == [1, 2, 3, 4]
    assert all(url == "http://hooks.example/x" for url, _ in rx.got), "the URL is stripped"
    assert all(verify(o.body, KEY, o.headers[SIGNATURE_HEADER]) for _, o in rx.got)
    assert events.seen == []
    n.close()


def test_a_receiver_that_fails_at_first_gets_the_message_after_backoff() -> None:
    rx = Receiver(503, OSError("connection refused"), 429)
    n, events, slept = sender(rx)
    submit(n, "Promoted")
    assert n.wait_idle(5)
    assert len(rx.got) == 4
    assert rx.decisions()[-1] == "promoted"
    assert slept == [0.75, 1.5, 3.0], "exponential, with jitter between half and all"
    ids = {json.loads(o.body)["id"] for _, o in rx.got}
    assert len(ids) == 1, "a retry is the same message"
    assert events.seen == []
    n.close()


def test_a_message_not_taken_after_every_retry_is_a_warning_event() -> None:
    rx = Receiver(*[OSError("connection refused")] * 10)
    n, events, _ = sender(rx)
    submit(n, "RolledBack")
    assert n.wait_idle(5)
    assert len(rx.got) == 4
    (event,) = events.seen
    assert (event.type, event.reason) == (EventType.WARNING, "NotificationFailed")
    assert "rolledback" in event.message
    assert "after 4 attempts" in event.message
    assert "hooks.example" not in event.message, "the URL may hold a token: never in an Event"
    n.close()


def test_a_refusal_is_final_and_is_not_retried() -> None:
    rx = Receiver(403)
    n, events, slept = sender(rx)
    submit(n, "Promoted")
    assert n.wait_idle(5)
    assert len(rx.got) == 1
    assert slept == []
    assert "HTTP 403 (final)" in events.seen[0].message
    n.close()


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        pytest.param(None, "Secret ml/modelrollout-notifications not found", id="no-secret"),
        pytest.param({"hook": b"http://x"}, "has no key 'key'", id="no-signing-key"),
    ],
)
def test_a_missing_secret_or_key_is_a_warning_event_and_nothing_is_sent(
    secret: dict[str, bytes] | None, said: str
) -> None:
    rx = Receiver()
    n, events, _ = sender(rx, secrets=Secrets(secret))
    submit(n, "Promoted")
    assert n.wait_idle(5)
    assert rx.got == []
    assert said in events.seen[0].message
    n.close()


def test_the_secret_is_read_once_for_a_burst_of_messages() -> None:
    secrets = Secrets(SECRET)
    n, _, _ = sender(Receiver(), secrets=secrets)
    submit(n, "RolloutStarted", "WeightChanged", "Promoted")
    assert n.wait_idle(5)
    assert secrets.reads == 1
    n.close()


def test_a_receiver_gets_only_the_decisions_it_asked_for() -> None:
    only = Notification.model_validate(
        {"slack": {"urlKey": "slack"}, "decisions": ["rolledback", "promoted"]}
    )
    rx = Receiver()
    n, _, _ = sender(rx)
    submit(n, "RolloutStarted", "WeightChanged", "Promoted", receivers=[only])
    assert n.wait_idle(5)
    assert [json.loads(o.body)["text"].split()[2] for _, o in rx.got] == ["promoted"]
    n.close()


def test_a_full_queue_drops_new_messages_instead_of_waiting() -> None:
    gate = threading.Event()

    def slow(url: str, out: Outgoing, timeout: float) -> int:
        gate.wait(5)
        return 200

    outcomes: list[tuple[str, str]] = []
    n = Notifier(
        events=Events(),
        secrets=Secrets(SECRET),
        settings=Settings(capacity=2, workers=1),
        transport=slow,
        observe=lambda kind, outcome: outcomes.append((kind, outcome)),
    ).start()
    submit(n, *["WeightChanged"] * 6)
    assert outcomes == [("webhook", "dropped")] * 4, "two fit, four are dropped at once"
    gate.set()
    assert n.wait_idle(5)
    assert outcomes.count(("webhook", "delivered")) == 2
    n.close()


def test_no_default_receivers_and_no_spec_receivers_send_nothing() -> None:
    rx = Receiver()
    n, _, _ = sender(rx)
    n.submit(BODY, None, STATUS, [Event(EventType.NORMAL, "Promoted", "p")], NOW)
    n.submit(BODY, [], STATUS, [Event(EventType.NORMAL, "Promoted", "p")], NOW)
    assert n.wait_idle(5)
    assert rx.got == []
    n.close()


# ------------------------------------------------------------------- operator defaults


def test_default_receivers_serve_rollouts_whose_spec_names_none(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(
        "- slack: {url: 'http://chat.example/hook'}\n"
        "  decisions: [promoted]\n"
        "- webhook: {url: 'https://audit.example/r', signingSecret: abc}\n"
    )
    targets = load_defaults(path)
    assert [t.kind for t in targets] == ["slack", "webhook"]
    assert targets[1].signing_key == b"abc"
    rx = Receiver()
    n, _, _ = sender(rx, defaults=targets)
    n.submit(BODY, None, STATUS, [Event(EventType.NORMAL, "RolledBack", "r")], NOW)
    assert n.wait_idle(5)
    assert [u for u, _ in rx.got] == ["https://audit.example/r"]
    n.close()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("- webhook: {url: 'http://x'}\n", "needs a signingSecret", id="unsigned"),
        pytest.param("- slack: {url: 'file:///etc/passwd'}\n", "not http", id="not-http"),
        pytest.param("- slack: {url: 'http://x'}\n  webhook: {url: 'http://y'}\n", "exactly one"),
        pytest.param("slack: {}\n", "expected a list", id="not-a-list"),
    ],
)
def test_bad_default_receivers_stop_the_operator_at_start(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_defaults(path)


def test_a_url_that_is_not_http_is_refused_without_a_request() -> None:
    from modelrollout.operator.notify import http_post

    with pytest.raises(NotDelivered, match="not http"):
        http_post("file:///etc/passwd", Outgoing({}, b""), 1.0)


def test_a_secret_url_that_is_not_http_fails_with_a_warning(tmp_path: Path) -> None:
    from modelrollout.operator.notify import http_post

    n = Notifier(
        events=(events := Events()),
        secrets=Secrets({"hook": b"file:///etc/passwd", "key": KEY}),
        transport=http_post,
    ).start()
    submit(n, "Promoted")
    assert n.wait_idle(5)
    assert "not http or https" in events.seen[0].message
    n.close()
