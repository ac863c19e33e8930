"""Where a rollout's decisions are sent: ``spec.notifications``.

A tenant may not make the operator call arbitrary URLs, so the spec never
holds one: it names *keys* of one Secret with a fixed name,
``modelrollout-notifications``, in the rollout's own namespace. Whoever may
write that Secret (the namespace's admin) chooses the URLs and the signing
keys; the operator may ``get`` that one Secret by name and nothing else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from modelrollout.api.base import ApiModel, cel_rules

#: The one Secret, in the rollout's namespace, that holds notification URLs and keys.
SECRET_NAME = "modelrollout-notifications"

SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


def _key(description: str) -> Any:
    return Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN, description=description)


class NotifiedDecision(StrEnum):
    """A decision worth telling someone about (the CloudEvents type is io.modelrollout.<it>)."""

    STARTED = "started"
    """A rollout started (or restarted for a new candidate, or was retried)."""
    STEP = "step"
    """The candidate's weight changed, shadow passed, or blue-green switched."""
    PAUSED = "paused"
    """Held for a human: a gate, a pause command, spec.paused, or inconclusive analysis."""
    RESUMED = "resumed"
    """A pause was lifted."""
    INCONCLUSIVE = "inconclusive"
    """A check had no data (below the limit that pauses)."""
    ROLLED_BACK = "rolledback"
    """All traffic back on stable: failed analysis, an abort, or a deletion mid-rollout."""
    PROMOTED = "promoted"
    """The candidate is the new stable."""
    FAILED = "failed"
    """The rollout cannot run as written (invalid spec, no stable version known)."""


class CloudEventsMode(StrEnum):
    """CloudEvents HTTP binding: attributes as ce-* headers, or the whole event as JSON."""

    BINARY = "binary"
    STRUCTURED = "structured"


class WebhookNotification(ApiModel):
    """A generic JSON webhook, signed with HMAC-SHA256 (X-ModelRollout-Signature)."""

    url_key: str = _key("Key in Secret modelrollout-notifications that holds the URL.")
    signing_secret_key: str = _key(
        "Key in Secret modelrollout-notifications that holds the HMAC-SHA256 signing key."
    )


class SlackNotification(ApiModel):
    """A Slack-compatible incoming webhook (``{"text": ...}``; Mattermost and others too)."""

    url_key: str = _key("Key in Secret modelrollout-notifications that holds the webhook URL.")


class CloudEventsNotification(ApiModel):
    """CloudEvents 1.0 over HTTP, type ``io.modelrollout.<decision>``."""

    url_key: str = _key("Key in Secret modelrollout-notifications that holds the sink URL.")
    mode: CloudEventsMode = Field(default=CloudEventsMode.BINARY)
    signing_secret_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key in Secret modelrollout-notifications that holds an HMAC-SHA256 "
        "signing key (optional: X-ModelRollout-Signature over the body).",
    )


class Notification(ApiModel):
    """One receiver: exactly one of webhook, slack, cloudEvents."""

    model_config = cel_rules(
        (
            "[has(self.webhook), has(self.slack), has(self.cloudEvents)].filter(x, x).size() == 1",
            "a notification needs exactly one of webhook, slack, cloudEvents",
        )
    )

    webhook: WebhookNotification | None = None
    slack: SlackNotification | None = None
    cloud_events: CloudEventsNotification | None = None
    decisions: list[NotifiedDecision] | None = Field(
        default=None,
        max_length=16,
        description="Decisions to send. Default: every one.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Notification:
        n = sum(x is not None for x in (self.webhook, self.slack, self.cloud_events))
        if n != 1:
            raise ValueError("a notification needs exactly one of webhook, slack, cloudEvents")
        return self
