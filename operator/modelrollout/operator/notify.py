"""Sending notifications: a bounded queue, background workers, retries; never in the way.

The reconcile hands each decision's Events to :meth:`Notifier.submit` after the
status patch; ``submit`` only appends to an in-memory queue and returns, so a
slow or dead receiver never blocks or slows a decision. Background threads
deliver:

- **Order.** One FIFO queue per (rollout, receiver), and at most one message
  of a queue in flight: a receiver gets one rollout's decisions in decision
  order, and a dead receiver holds up only its own queue. Each message also
  carries the rollout's ``sequence`` number.
- **Retries.** Connection errors, timeouts, 408, 429 and 5xx are retried with
  exponential backoff and jitter (``backoff * 2**attempt``, capped, the wait
  drawn between half of that and all of it); any other answer is final. A
  message not delivered after every retry, a missing Secret or key, or a URL
  that is not http(s), becomes a ``NotificationFailed`` Warning Event on the
  rollout; the rollout itself carries on.
- **Bounds.** At most ``capacity`` messages wait, operator-wide; past that a
  new message is dropped (logged and counted), never waited for.
- **Where URLs come from.** A rollout's receivers name keys of Secret
  ``modelrollout-notifications`` in its own namespace (read with one ``get`` by
  name, cached a few seconds); the operator's default receivers (for rollouts
  whose spec sets none) come from ``--notifications-file``, which the operator's
  admin writes.

Nothing here is kept across restarts: messages still queued when the operator
stops are lost (it waits a few seconds for them on a clean stop).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelrollout.api.notifications import (
    SECRET_NAME,
    CloudEventsMode,
    Notification,
    NotifiedDecision,
)
from modelrollout.engine import Event, EventType
from modelrollout.notify.format import Notice, Outgoing, Target, notice_for, render

log = logging.getLogger("modelrollout.notify")

#: (url, request, timeout seconds) -> HTTP status; raises OSError when there is no answer.
Transport = Callable[[str, Outgoing, float], int]


class EventSink(Protocol):
    def emit(self, body: dict[str, Any], event: Event) -> None: ...


class SecretReader(Protocol):
    def read(self, namespace: str) -> dict[str, bytes]:
        """The data of Secret modelrollout-notifications; LookupError when it is missing."""
        ...


class NotDelivered(Exception):
    """A message that will not be delivered (after retries, or at once for a bad config)."""


# ------------------------------------------------------------------------ transport


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A receiver's redirect is an answer, not an invitation to POST somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def http_post(url: str, out: Outgoing, timeout: float) -> int:
    """POST with the standard library; only http and https (never file:, ftp:, ...)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise NotDelivered("the URL is not http or https")
    req = urllib.request.Request(url, data=out.body, headers=out.headers, method="POST")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# ------------------------------------------------------------------------ targets


class KubeSecretReader:
    """One ``get`` of Secret modelrollout-notifications by name; RBAC allows nothing else."""

    def __init__(self) -> None:
        from kubernetes import client

        self.api = client.CoreV1Api()

    def read(self, namespace: str) -> dict[str, bytes]:
        try:
            secret = self.api.read_namespaced_secret(SECRET_NAME, namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise LookupError(f"Secret {namespace}/{SECRET_NAME} not found") from exc
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


class _DefaultReceiver(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(min_length=1)
    signing_secret: str | None = Field(default=None, alias="signingSecret")
    mode: CloudEventsMode = CloudEventsMode.BINARY


class _DefaultTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    webhook: _DefaultReceiver | None = None
    slack: _DefaultReceiver | None = None
    cloud_events: _DefaultReceiver | None = Field(default=None, alias="cloudEvents")
    decisions: list[NotifiedDecision] | None = None


def load_defaults(path: str | Path) -> list[Target]:
    """The operator-wide receivers of ``--notifications-file`` (YAML or JSON), e.g.::

    - slack: {url: https://hooks.slack.com/services/...}
      decisions: [rolledback, failed, paused]
    - webhook: {url: https://audit.example.com/rollouts, signingSecret: s3cr3t}
    - cloudEvents: {url: http://broker-ingress.knative-eventing/ml/default, mode: structured}
    """
    raw = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of receivers")
    targets = []
    for i, item in enumerate(raw):
        try:
            t = _DefaultTarget.model_validate(item)
        except ValidationError as exc:
            raise ValueError(f"{path}: receiver {i}: {exc}") from exc
        kinds = [(k, r) for k, r in (("webhook", t.webhook), ("slack", t.slack),
                                     ("cloudEvents", t.cloud_events)) if r is not None]  # fmt: skip
        if len(kinds) != 1:
            raise ValueError(
                f"{path}: receiver {i} needs exactly one of webhook, slack, cloudEvents"
            )
        kind, r = kinds[0]
        if kind == "webhook" and not r.signing_secret:
            raise ValueError(f"{path}: receiver {i}: a webhook needs a signingSecret")
        if urllib.parse.urlsplit(r.url).scheme not in ("http", "https"):
            raise ValueError(f"{path}: receiver {i}: the URL is not http or https")
        targets.append(
            Target(
                kind=kind,
                url=r.url,
                signing_key=r.signing_secret.encode() if r.signing_secret else None,
                mode=r.mode,
                decisions=frozenset(t.decisions) if t.decisions is not None else None,
                label=f"default {kind} receiver {i}",
            )
        )
    return targets


def kind_of(n: Notification) -> str:
    if n.webhook is not None:
        return "webhook"
    return "slack" if n.slack is not None else "cloudEvents"


def _label(n: Notification, index: int) -> str:
    if n.webhook is not None:
        return f"webhook (spec.notifications[{index}], key {n.webhook.url_key})"
    if n.slack is not None:
        return f"slack (spec.notifications[{index}], key {n.slack.url_key})"
    assert n.cloud_events is not None
    return f"cloudEvents (spec.notifications[{index}], key {n.cloud_events.url_key})"


def resolve(n: Notification, index: int, data: Mapping[str, bytes], namespace: str) -> Target:
    """A spec receiver with its URL and key read from the Secret's data."""

    def get(key: str) -> bytes:
        if key not in data:
            raise NotDelivered(f"Secret {namespace}/{SECRET_NAME} has no key {key!r}")
        return data[key]

    decisions = frozenset(n.decisions) if n.decisions is not None else None
    label = _label(n, index)
    if n.webhook is not None:
        url, kind, mode = get(n.webhook.url_key), "webhook", CloudEventsMode.BINARY
        key: bytes | None = get(n.webhook.signing_secret_key)
    elif n.slack is not None:
        url, kind, mode, key = get(n.slack.url_key), "slack", CloudEventsMode.BINARY, None
    else:
        assert n.cloud_events is not None
        ce = n.cloud_events
        url, kind, mode = get(ce.url_key), "cloudEvents", ce.mode
        key = get(ce.signing_secret_key) if ce.signing_secret_key else None
    return Target(kind, url.decode().strip(), key, mode, decisions, label)


# ------------------------------------------------------------------------ the queue


@dataclass(frozen=True)
class _Job:
    body: dict[str, Any]
    """The rollout's metadata only: enough to put an Event on it."""
    notice: Notice
    target: Target | None
    """Resolved already (a default receiver), or None: resolve ``spec`` from the Secret."""
    spec: Notification | None
    index: int


@dataclass
class Settings:
    capacity: int = 1000
    workers: int = 4
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 5.0
    secret_ttl: float = 10.0


class Notifier:
    """The background sender; one per operator process (built at start-up, kept in memo)."""

    def __init__(
        self,
        *,
        events: EventSink,
        secrets: SecretReader | None = None,
        defaults: Sequence[Target] = (),
        settings: Settings | None = None,
        transport: Transport = http_post,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self.events = events
        self.secrets = secrets
        self.defaults = list(defaults)
        self.settings = settings or Settings()
        self.transport = transport
        self.sleep = sleep
        self.jitter = jitter
        self.wall_clock = wall_clock
        self.observe = observe or (lambda kind, outcome: None)
        self._cv = threading.Condition()
        self._queues: dict[tuple[str, str], deque[_Job]] = {}
        self._ready: deque[tuple[str, str]] = deque()
        self._busy: set[tuple[str, str]] = set()
        self._size = 0
        self._closing = False
        self._sequence: dict[str, int] = {}
        self._secret_cache: dict[str, tuple[float, dict[str, bytes] | Exception]] = {}
        self._threads: list[threading.Thread] = []

    # -- the reconcile's side: never blocks ------------------------------------------

    def submit(
        self,
        body: Mapping[str, Any],
        receivers: Sequence[Notification] | None,
        status: Mapping[str, Any],
        events: Sequence[Event],
        now: datetime,
    ) -> None:
        """Queue one notice per Event and receiver; return at once."""
        meta = dict(body.get("metadata") or {})
        slim = {"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid")}}
        rollout = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        with self._cv:
            for event in events:
                seq = self._sequence.get(rollout, 0) + 1
                notice = notice_for(
                    event, body=slim, status=status, now=now, sequence=seq, id=str(uuid.uuid4())
                )
                if notice is None:
                    continue
                self._sequence[rollout] = seq
                if receivers is None:
                    for i, target in enumerate(self.defaults):
                        if target.wants(notice.decision):
                            self._put(
                                (rollout, f"default-{i}"), _Job(slim, notice, target, None, i)
                            )
                else:
                    for i, n in enumerate(receivers):
                        if n.decisions is None or notice.decision in n.decisions:
                            self._put((rollout, f"spec-{i}"), _Job(slim, notice, None, n, i))

    def forget(self, body: Mapping[str, Any]) -> None:
        """A deleted rollout's sequence counter goes (its queued messages are still sent)."""
        meta = body.get("metadata") or {}
        with self._cv:
            self._sequence.pop(str(meta.get("uid") or ""), None)

    def _put(self, key: tuple[str, str], job: _Job) -> None:
        if self._size >= self.settings.capacity:
            kind = job.target.kind if job.target else kind_of(job.spec)  # type: ignore[arg-type]
            log.warning(
                "notification queue full (%d): dropped %s of %s/%s",
                self.settings.capacity,
                job.notice.decision.value,
                job.notice.namespace,
                job.notice.name,
            )
            self.observe(kind, "dropped")
            return
        queue = self._queues.setdefault(key, deque())
        queue.append(job)
        self._size += 1
        if len(queue) == 1 and key not in self._busy:
            self._ready.append(key)
            self._cv.notify()

    # -- the workers -----------------------------------------------------------------

    def start(self) -> Notifier:
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"notify-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; give queued messages up to ``timeout`` seconds to go out."""
        self.wait_idle(timeout)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=0.1)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or in flight (for tests and a clean stop)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._size or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._ready and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                key = self._ready.popleft()
                job = self._queues[key].popleft()
                self._size -= 1
                self._busy.add(key)
            try:
                self._deliver(job)
            except Exception:  # a bug here must not kill the worker
                log.exception("notification worker")
            with self._cv:
                self._busy.discard(key)
                if self._queues[key]:
                    self._ready.append(key)
                else:
                    del self._queues[key]
                self._cv.notify_all()

    def _deliver(self, job: _Job) -> None:
        n = job.notice
        target = job.target
        kind = target.kind if target else kind_of(job.spec)  # type: ignore[arg-type]
        try:
            if target is None:
                assert job.spec is not None
                target = resolve(job.spec, job.index, self._secret(n.namespace), n.namespace)
                kind = target.kind
            attempts = self._send(target, n)
        except NotDelivered as exc:
            label = target.label if target else f"spec.notifications[{job.index}]"
            message = f"{n.decision.value} ({n.reason}) not sent to {label}: {exc}"
            log.warning("%s/%s: %s", n.namespace, n.name, message)
            self.observe(kind, "failed")
            self.events.emit(job.body, Event(EventType.WARNING, "NotificationFailed", message))
            return
        self.observe(kind, "delivered")
        if attempts > 1:
            self.observe(kind, "retried")

    def _secret(self, namespace: str) -> dict[str, bytes]:
        if self.secrets is None:
            raise NotDelivered("the operator reads no Secrets (no Kubernetes client)")
        now = time.monotonic()
        cached = self._secret_cache.get(namespace)
        if cached is None or now - cached[0] > self.settings.secret_ttl:
            try:
                value: dict[str, bytes] | Exception = self.secrets.read(namespace)
            except Exception as exc:
                value = exc
            cached = (now, value)
            self._secret_cache[namespace] = cached
        if isinstance(cached[1], LookupError):
            raise NotDelivered(str(cached[1]).strip("'\""))
        if isinstance(cached[1], Exception):
            raise NotDelivered(f"cannot read Secret {namespace}/{SECRET_NAME}: {cached[1]}")
        return cached[1]

    def _send(self, target: Target, notice: Notice) -> int:
        """Attempts until one is taken; NotDelivered when none is. Returns the attempts made."""
        s = self.settings
        why = ""
        for attempt in range(s.retries + 1):
            out = render(target, notice, sent_at=int(self.wall_clock()))
            try:
                code = self.transport(target.url, out, s.timeout)
            except NotDelivered:
                raise
            except OSError as exc:  # refused, reset, timed out, DNS: no answer at all
                why, retry = f"no answer ({_reason(exc)})", True
            else:
                if 200 <= code < 300:
                    return attempt + 1
                why, retry = f"HTTP {code}", code in (408, 429) or code >= 500
            if not retry:
                raise NotDelivered(f"{why} (final)")
            if attempt < s.retries:
                self.sleep(self.delay(attempt))
        raise NotDelivered(f"{why} after {s.retries + 1} attempts")

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of ``backoff * 2**attempt``."""
        s = self.settings
        ceiling = min(s.max_backoff, s.backoff * float(2**attempt))
        return ceiling / 2 + self.jitter() * ceiling / 2


def _reason(exc: OSError) -> str:
    inner = getattr(exc, "reason", None)
    return str(inner if inner is not None else exc) or type(exc).__name__


__all__ = [
    "KubeSecretReader",
    "NotDelivered",
    "Notifier",
    "Settings",
    "http_post",
    "load_defaults",
    "resolve",
]
