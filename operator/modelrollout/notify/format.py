"""What a notification says, byte for byte: pure functions, no I/O, no clock.

The content of every notification is one engine :class:`~modelrollout.engine.Event`
(the same words ``kubectl describe`` shows), turned into a decision by the
table :data:`DECISIONS`, and rendered for one kind of receiver:

- ``webhook``: JSON (:meth:`Notice.data`), signed. ``X-ModelRollout-Signature:
  sha256=<hex>`` is HMAC-SHA256 over the raw body with the receiver's key;
  ``X-ModelRollout-Timestamp`` is the Unix time of this attempt, which the body
  also carries as ``sentAt``, so the signature covers it: a receiver rejects a
  message whose ``sentAt`` is older than a few minutes (a replay) or whose
  ``id`` it has seen (a retry it already took).
- ``slack``: ``{"text": ...}``, the incoming-webhook format that Slack,
  Mattermost and Rocket.Chat read.
- ``cloudEvents``: CloudEvents 1.0 over HTTP, ``type: io.modelrollout.<decision>``,
  ``source: /apis/modelrollout.io/v1alpha1/namespaces/<ns>/modelrollouts/<name>``,
  in binary mode (``ce-*`` headers, the JSON as body) or structured mode
  (``application/cloudevents+json``); signed like the webhook when it has a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelrollout.api.base import GROUP, PLURAL, VERSION
from modelrollout.api.notifications import CloudEventsMode, NotifiedDecision
from modelrollout.engine.types import Event

D = NotifiedDecision

#: Event reason -> the decision it is sent as. Reasons not here are not sent
#: (AnalysisFailed below the limit, Approved, RequestIgnored, TrafficDrift, ...).
DECISIONS: dict[str, NotifiedDecision] = {
    "RolloutStarted": D.STARTED,
    "CandidateReplaced": D.STARTED,
    "Retried": D.STARTED,
    "WeightChanged": D.STEP,
    "ShadowPassed": D.STEP,
    "Switched": D.STEP,
    "Paused": D.PAUSED,
    "Resumed": D.RESUMED,
    "AnalysisInconclusive": D.INCONCLUSIVE,
    "RolledBack": D.ROLLED_BACK,
    "Aborted": D.ROLLED_BACK,
    "Deleted": D.ROLLED_BACK,
    "Promoted": D.PROMOTED,
    "Invalid": D.FAILED,
    "InvalidSpec": D.FAILED,
}

SIGNATURE_HEADER = "X-ModelRollout-Signature"
TIMESTAMP_HEADER = "X-ModelRollout-Timestamp"
DELIVERY_HEADER = "X-ModelRollout-Delivery"
CLOUDEVENT_TYPE_PREFIX = "io.modelrollout."
USER_AGENT = "modelrollout-operator"

_SLACK_ICONS = {
    D.STARTED: ":rocket:",
    D.STEP: ":arrow_up_small:",
    D.PAUSED: ":double_vertical_bar:",
    D.RESUMED: ":arrow_forward:",
    D.INCONCLUSIVE: ":grey_question:",
    D.ROLLED_BACK: ":rewind:",
    D.PROMOTED: ":white_check_mark:",
    D.FAILED: ":x:",
}


def rfc3339(t: datetime) -> str:
    """Engine times are naive UTC."""
    return t.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


@dataclass(frozen=True)
class Notice:
    """One decision of one rollout, ready to render for any receiver."""

    id: str
    """Unique per decision; the same on every retry and for every receiver of it."""
    sequence: int
    """Goes up by one with each decision of the rollout, within one operator process
    (a restarted operator starts again at 1): a gap means a message was lost."""
    decision: NotifiedDecision
    reason: str
    severity: str
    message: str
    time: str
    namespace: str
    name: str
    uid: str
    status: Mapping[str, Any]

    @property
    def source(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"

    def data(self, sent_at: int) -> dict[str, Any]:
        """The JSON a webhook receives (and a CloudEvent's data)."""
        st = self.status
        weights = st.get("weights") or {}
        return {
            "id": self.id,
            "sequence": self.sequence,
            "decision": self.decision.value,
            "reason": self.reason,
            "severity": self.severity,
            "message": self.message,
            "time": self.time,
            "sentAt": sent_at,
            "rollout": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
            "phase": st.get("phase"),
            "stage": st.get("stage"),
            "stableVersion": st.get("stableVersion"),
            "candidateVersion": st.get("candidateVersion"),
            "candidateWeight": weights.get("candidate", 0),
            "mirrorPercent": st.get("mirrorPercent", 0),
        }


def notice_for(
    event: Event,
    *,
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    now: datetime,
    sequence: int,
    id: str,
) -> Notice | None:
    """The notice for one Event of one reconcile; None when its reason is not sent."""
    decision = DECISIONS.get(event.reason)
    if decision is None:
        return None
    meta = body.get("metadata") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    uid = str(meta.get("uid") or f"{ns}/{name}")
    return Notice(
        id=id,
        sequence=sequence,
        decision=decision,
        reason=event.reason,
        severity=event.type.value,
        message=event.message,
        time=rfc3339(now),
        namespace=ns,
        name=name,
        uid=uid,
        status=status,
    )


@dataclass(frozen=True)
class Target:
    """A receiver with its URL and key resolved (from the Secret or the operator's file)."""

    kind: str
    """``webhook``, ``slack`` or ``cloudEvents``."""
    url: str
    signing_key: bytes | None = None
    mode: CloudEventsMode = CloudEventsMode.BINARY
    decisions: frozenset[NotifiedDecision] | None = None
    label: str = ""
    """How Events and logs name the receiver: never its URL, which may carry a token."""

    def wants(self, decision: NotifiedDecision) -> bool:
        return self.decisions is None or decision in self.decisions


@dataclass(frozen=True)
class Outgoing:
    """One HTTP POST, as it goes out."""

    headers: dict[str, str]
    body: bytes


def sign(body: bytes, key: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over the raw body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, key: bytes, signature: str | None) -> bool:
    """What a receiver checks (constant-time)."""
    return signature is not None and hmac.compare_digest(sign(body, key), signature)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def slack_text(n: Notice) -> str:
    weight = (n.status.get("weights") or {}).get("candidate", 0)
    candidate = n.status.get("candidateVersion") or "?"
    return (
        f"{_SLACK_ICONS[n.decision]} *{n.namespace}/{n.name}* {n.decision.value} "
        f"({candidate}, weight {weight}%): {n.message}"
    )


def render(target: Target, notice: Notice, *, sent_at: int) -> Outgoing:
    """The POST for one attempt (``sent_at``: Unix seconds of this attempt)."""
    headers = {"User-Agent": USER_AGENT}
    if target.kind == "slack":
        headers["Content-Type"] = "application/json"
        return Outgoing(headers, _json({"text": slack_text(notice)}))
    data = notice.data(sent_at)
    if target.kind == "cloudEvents":
        attributes = {
            "specversion": "1.0",
            "type": CLOUDEVENT_TYPE_PREFIX + notice.decision.value,
            "source": notice.source,
            "id": notice.id,
            "time": notice.time,
            "subject": f"{notice.namespace}/{notice.name}",
        }
        if target.mode == CloudEventsMode.STRUCTURED:
            headers["Content-Type"] = "application/cloudevents+json"
            body = _json({**attributes, "datacontenttype": "application/json", "data": data})
        else:
            headers["Content-Type"] = "application/json"
            headers.update({f"ce-{k}": v for k, v in attributes.items()})
            body = _json(data)
    else:
        headers["Content-Type"] = "application/json"
        headers[DELIVERY_HEADER] = notice.id
        body = _json(data)
    headers[TIMESTAMP_HEADER] = str(sent_at)
    if target.signing_key is not None:
        headers[SIGNATURE_HEADER] = sign(body, target.signing_key)
    return Outgoing(headers, body)
