"""Every router, keyed by the ``spec.trafficRouting`` field it serves.

Adding a router is two things:

1. one new module in this package with one concrete
   :class:`~modelrollout.traffic.base.BaseRouter` subclass: its ``kind`` (the
   field's wire name), its ``settings`` (the field's pydantic model), ``names``
   (its target, built from the spec), ``build`` (from the shared Kubernetes
   clients), ``read`` and ``apply``. An object with a list of rules or routes
   can subclass :class:`~modelrollout.traffic.base.CustomObjectRouter` and
   describe the list with a :class:`~modelrollout.traffic.base.Sections`;
2. its field on :class:`~modelrollout.api.spec.TrafficRouting`.

Nothing else: this module finds the router by scanning the package, the
operator builds every router found here, the exactly-one rule (in Python and
as CEL in the CRD) follows the fields of ``TrafficRouting``, and
tests/unit/test_routers.py fails unless the fields and the routers pair up
one to one. Then ``make crds`` for the new field's schema.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from modelrollout.traffic.base import BaseRouter, Clients, Router


def _discover() -> dict[str, type[BaseRouter[Any]]]:
    found: dict[str, type[BaseRouter[Any]]] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseRouter)
                and value.__module__ == module.__name__
                and not inspect.isabstract(value)
            ):
                if value.kind in found:
                    raise TypeError(f"two routers for {value.kind!r}: {found[value.kind]}, {value}")
                found[value.kind] = value
    return found


ROUTERS: Mapping[str, type[BaseRouter[Any]]] = MappingProxyType(_discover())
"""Router classes by kind; ``ROUTERS[spec.traffic_routing.kind].names(...)`` builds a target."""


def build(clients: Clients) -> dict[str, Router[Any]]:
    """One router of each kind on the shared clients, as the operator keeps them."""
    return {kind: router.build(clients) for kind, router in ROUTERS.items()}
