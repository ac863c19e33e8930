"""What every API module shares: the names of the API, durations, and the base model.

The ModelRollout API is pydantic models that are the single source of the CRD:
``spec`` (what a user writes) in :mod:`modelrollout.api.spec` and
:mod:`modelrollout.api.gates`, ``status`` (what the operator records) in
:mod:`modelrollout.api.status`. ``modelrollout.api.crd`` turns them into the
CustomResourceDefinition under ``crds/``; a test fails when the two disagree.

Field names are camelCase on the wire (as Kubernetes users expect) and
snake_case in Python; ``populate_by_name`` lets either form in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ["mro"]

#: The annotation a human request travels in (``<verb>:<unique id>``): the CLI writes it,
#: the operator reads it and acts once per id.
REQUEST_ANNOTATION = f"{GROUP}/request"

#: The Prometheus a rollout uses when ``spec.analysis.prometheus.address`` names none
#: (the operator's ``--prometheus`` default).
DEFAULT_PROMETHEUS_URL = "http://prometheus.monitoring:9090"

#: Timestamps in the status, to the second, always UTC: ``2026-03-01T12:00:00Z``.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: Go-style durations as users write them: ``30s``, ``10m``, ``1h30m``, ``500ms``.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "10m", "1h30m"])]
Percent = Annotated[int, Field(ge=0, le=100)]


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string; ``ValueError`` when it is not one."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use forms like 30s, 10m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def format_ts(t: datetime) -> str:
    """A status timestamp. A naive time is taken as UTC (the engine works in naive UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime(TIME_FORMAT)


def parse_ts(text: str | None) -> datetime | None:
    """A status timestamp as a naive UTC datetime, to compare with the engine's naive ``now``.

    Strict on purpose: the operator only reads what it wrote with :func:`format_ts`.
    """
    if not text:
        return None
    return datetime.strptime(text, TIME_FORMAT)


def cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    """Cross-field rules for the API server, as CEL, next to the Python rule they mirror."""
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]
        }
    )


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
