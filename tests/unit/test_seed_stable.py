"""The first stable version read from the route when ``spec.stable`` is omitted."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.engine import (
    Decision,
    Observations,
    Preflight,
    RouteBackend,
    TrafficState,
    decide,
)
from modelrollout.engine.seed import stable_from_route, version_of
from modelrollout.traffic import gateway_api, istio, service
from modelrollout.traffic.base import Names, RouteError
from modelrollout.traffic.registry import ROUTERS
from modelrollout.traffic.service import ServiceNames

from .engine_harness import T0, make_spec
from .test_routers import HTTPROUTE, VIRTUALSERVICE

B = RouteBackend


@pytest.mark.parametrize(
    ("template", "service", "expected"),
    [
        pytest.param("{model}-{version}", "fraud-detector-v1", "v1", id="default-template"),
        pytest.param("{model}-{version}", "fraud-detector-v1.2.0", "v1.2.0", id="dotted-version"),
        pytest.param("{model}-{version}", "other-model-v1", None, id="another-model"),
        pytest.param("{model}-{version}", "fraud-detector", None, id="no-version"),
        pytest.param("{model}-{version}", "fraud-detector-", None, id="empty-version"),
        pytest.param("svc-{version}-{model}", "svc-v3-fraud-detector", "v3", id="version-first"),
        pytest.param("{model}", "fraud-detector", None, id="template-without-version"),
        pytest.param("{model}-{team}-{version}", "fraud-detector-x-v1", None, id="unknown-field"),
        pytest.param("{model}-{version", "fraud-detector-v1", None, id="broken-template"),
    ],
)
def test_a_version_is_parsed_out_of_a_service_name_by_the_template(
    template: str, service: str, expected: str | None
) -> None:
    assert version_of(template, model="fraud-detector", service=service) == expected


@pytest.mark.parametrize(
    ("backends", "version", "found"),
    [
        pytest.param(
            (B("fraud-detector-v1", 100), B("legacy-fallback", 0)),
            "v1",
            "sends all live traffic to fraud-detector-v1",
            id="one-live-backend",
        ),
        pytest.param(
            (B("admin-ui", 1, rule=0), B("fraud-detector-v1", 1, rule=2)),
            "v1",
            "fraud-detector-v1",
            id="other-rules-of-a-shared-route-are-left-out",
        ),
        pytest.param(
            (B("fraud-detector", 100, version="v7"),),
            "v7",
            "version v7",
            id="a-service-selector-names-the-version",
        ),
        pytest.param(
            (B("fraud-detector-v1", 50), B("fraud-detector-v2", 50)),
            None,
            "ambiguous: it sends live traffic to fraud-detector-v1 (weight 50), "
            "fraud-detector-v2 (weight 50)",
            id="two-live-backends",
        ),
        pytest.param(
            (B("fraud-detector-v1", 90), B("legacy", 10)),
            None,
            "ambiguous",
            id="a-live-backend-outside-the-template",
        ),
        pytest.param(
            (B("fraud-detector-v1", 0), B("legacy", 100)),
            None,
            "sends all live traffic to legacy, which spec.serviceTemplate",
            id="all-traffic-on-a-name-the-template-cannot-make",
        ),
        pytest.param(
            (B("legacy", 100),),
            None,
            "no backend of the route is a Service that spec.serviceTemplate '{model}-{version}' "
            "names for model fraud-detector (the route sends live traffic to legacy)",
            id="no-backend-of-the-model",
        ),
        pytest.param(
            (B("fraud-detector-v1", 0),),
            None,
            "sends no live traffic",
            id="no-live-traffic",
        ),
        pytest.param(
            (B("fraud-detector-v1", 1, rule=0), B("fraud-detector-v1", 1, rule=1)),
            None,
            "2 rules of the route send to the model's Services",
            id="two-rules-for-the-model",
        ),
    ],
)
def test_the_stable_version_is_read_from_the_route_only_when_it_is_clear(
    backends: tuple[RouteBackend, ...], version: str | None, found: str
) -> None:
    got, why = stable_from_route(make_spec(stable=None), backends)
    assert got == version
    assert found in why


def _decide(status: ModelRolloutStatus, **obs: Any) -> tuple[Decision, ModelRolloutStatus]:
    obs.setdefault("preflight", Preflight())  # every gate's query accepted
    d = decide(make_spec(stable=None), status, Observations(**obs), T0)
    return d, ModelRolloutStatus.model_validate(d.status)


def test_a_rollout_without_spec_stable_seeds_it_from_the_route_and_starts() -> None:
    d, status = _decide(
        ModelRolloutStatus(),
        route_backends=(B("fraud-detector-v1", 100),),
        traffic=None,
    )
    assert status.stable_version == "v1"
    assert status.phase == Phase.PROGRESSING
    assert [e.reason for e in d.events][:2] == ["StableFromRoute", "RolloutStarted"]
    assert d.traffic is not None
    assert d.traffic.stable_version == "v1"


def test_an_ambiguous_route_fails_with_what_was_seen_and_says_it_once() -> None:
    seen = (B("fraud-detector-v1", 50), B("fraud-detector-v3", 50))
    d, status = _decide(ModelRolloutStatus(), route_backends=seen)
    assert status.phase == Phase.FAILED
    assert status.stable_version is None
    assert status.message is not None
    assert "fraud-detector-v1 (weight 50), fraud-detector-v3 (weight 50)" in status.message
    assert "set spec.stable.version" in status.message
    assert d.traffic is None, "nothing is routed while the stable version is unknown"
    again, _ = _decide(status, route_backends=seen)
    assert again.events == []


def test_a_failed_seed_recovers_once_the_route_is_clear() -> None:
    _, status = _decide(ModelRolloutStatus(), route_backends=(B("legacy", 100),))
    assert status.phase == Phase.FAILED
    _, status = _decide(status, route_backends=(B("fraud-detector-v1", 100),))
    assert (status.stable_version, status.phase) == ("v1", Phase.PROGRESSING)


def test_a_route_that_cannot_be_read_says_so_in_the_failed_message() -> None:
    _, status = _decide(ModelRolloutStatus(), traffic_error="HTTPRoute ml/x not found")
    assert status.phase == Phase.FAILED
    assert status.message is not None
    assert "could not be read: HTTPRoute ml/x not found" in status.message


def test_a_seeded_stable_is_kept_and_the_route_is_not_asked_again() -> None:
    _, status = _decide(ModelRolloutStatus(), route_backends=(B("fraud-detector-v1", 100),))
    d, status = _decide(status, traffic=TrafficState(10, 0))
    assert status.stable_version == "v1"
    assert "StableFromRoute" not in [e.reason for e in d.events]


# ------------------------------------------------------------------------- the routers


def bare(**kw: Any) -> Names:
    return Names(namespace="ml", object_name="fraud-detector", stable="", candidate=None, **kw)


def test_httproute_offers_the_backends_of_every_rule_that_matches_every_request() -> None:
    got = gateway_api.backends(HTTPROUTE, bare())
    assert got == (
        B("admin-ui", 1, rule=0),
        B("fraud-detector-v1", 100, rule=2),
        B("legacy-fallback", 0, rule=2),
    )
    version, _ = stable_from_route(make_spec(stable=None), got)
    assert version == "v1"


def test_httproute_offers_only_the_named_rule_and_refuses_a_missing_one() -> None:
    route: dict[str, Any] = {"spec": {"rules": [{"name": "m", "backendRefs": [{"name": "a"}]}]}}
    assert gateway_api.backends(route, bare(section="m")) == (B("a", 1, rule=0),)
    with pytest.raises(RouteError, match="no rule named 'other'"):
        gateway_api.backends(route, bare(section="other"))


def test_virtualservice_offers_the_default_route_and_not_the_testers_route() -> None:
    got = istio.backends(VIRTUALSERVICE, bare())
    assert got == (B("fraud-detector-v1", 100, rule=1),)


def test_a_service_selector_names_the_version_or_is_refused_when_it_spans_all() -> None:
    names = ServiceNames(route=bare(), version_label="track")
    svc = {"spec": {"selector": {"app": "fraud-detector", "track": "v1"}}}
    assert service.backends(svc, names) == (B("fraud-detector", 100, version="v1"),)
    with pytest.raises(RouteError, match="no 'track' label: it sends traffic to every version"):
        service.backends({"spec": {"selector": {"app": "fraud-detector", "version": "v1"}}}, names)


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        pytest.param(
            {"gatewayAPI": {"httpRoute": "r", "rule": "model", "port": 8080}},
            Names(
                namespace="ml",
                object_name="r",
                stable="",
                candidate=None,
                section="model",
                port=8080,
            ),
            id="gatewayAPI",
        ),
        pytest.param(
            {"istio": {"virtualService": "vs", "route": "default"}},
            Names(namespace="ml", object_name="vs", stable="", candidate=None, section="default"),
            id="istio",
        ),
        pytest.param(
            {"service": {"name": "svc", "versionLabel": "track"}},
            ServiceNames(
                route=Names(namespace="ml", object_name="svc", stable="", candidate=None),
                version_label="track",
            ),
            id="service",
        ),
    ],
)
def test_before_any_version_each_router_targets_only_its_route_and_rule(
    routing: dict[str, Any], expected: object
) -> None:
    spec = make_spec(stable=None, trafficRouting=routing)
    assert ROUTERS[spec.traffic_routing.kind].route_names(spec, namespace="ml") == expected
