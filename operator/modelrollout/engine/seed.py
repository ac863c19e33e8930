"""The first stable version, read from the route when ``spec.stable`` is omitted.

A GitOps user who adopts an existing model writes only the candidate: the
version serving now is the one the route sends all live traffic to, mapped
back to a version through ``spec.serviceTemplate`` (``{model}-{version}``:
``fraud-detector-v1`` is ``v1``). Anything less clear is refused with a
message that says what was seen, never guessed: several backends with
traffic, or a Service name the template cannot produce, leaves the rollout
Failed until the route or the spec is fixed (``spec.stable.version`` always
wins).
"""

from __future__ import annotations

import re
import string

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.engine.types import RouteBackend

_VERSION = r"(?P<version>[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)"


def version_of(template: str, *, model: str, service: str) -> str | None:
    """The version whose Service ``template`` names ``service``; None when none does."""
    pattern = ""
    seen_version = False
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return None
    for literal, field, _spec, _conv in parts:
        pattern += re.escape(literal)
        if field is None:
            continue
        if field == "model":
            pattern += re.escape(model)
        elif field == "version" and not seen_version:
            pattern += _VERSION
            seen_version = True
        elif field == "version":
            pattern += "(?P=version)"
        else:
            return None
    if not seen_version:
        return None
    match = re.fullmatch(pattern, service)
    return match.group("version") if match else None


def stable_from_route(
    spec: ModelRolloutSpec, backends: tuple[RouteBackend, ...]
) -> tuple[str | None, str]:
    """(the stable version, what was found); the version is None when the route is unclear.

    The model's rule is the one rule whose backends include a Service that
    ``spec.serviceTemplate`` names for this model (other rules of a shared route,
    ``/admin`` to some UI, are left out). In it exactly one backend may have live
    traffic, and it must be one of the model's Services.
    """

    def version(b: RouteBackend) -> str | None:
        if b.version is not None:
            return b.version
        return version_of(spec.service_template, model=spec.model, service=b.service)

    rules = sorted({b.rule for b in backends if version(b) is not None})
    template = f"spec.serviceTemplate {spec.service_template!r}"
    if not rules:
        live = ", ".join(sorted({b.service for b in backends if b.weight > 0})) or "nothing"
        return None, (
            f"no backend of the route is a Service that {template} names for model "
            f"{spec.model} (the route sends live traffic to {live})"
        )
    if len(rules) > 1:
        return None, (
            f"{len(rules)} rules of the route send to the model's Services: name the model's "
            "rule in spec.trafficRouting"
        )
    in_rule = [b for b in backends if b.rule == rules[0] and b.weight > 0]
    if not in_rule:
        return None, "the model's rule sends no live traffic to any backend"
    if len(in_rule) > 1:
        seen = ", ".join(f"{b.service} (weight {b.weight})" for b in in_rule)
        return None, f"the route is ambiguous: it sends live traffic to {seen}"
    (only,) = in_rule
    found = version(only)
    if found is None:
        return None, (
            f"the route sends all live traffic to {only.service}, which {template} "
            f"does not name for model {spec.model}"
        )
    if only.version is not None:
        return found, f"the route sends all live traffic to version {found}"
    return found, f"the route sends all live traffic to {only.service}"
