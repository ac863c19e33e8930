"""The operator's Prometheus policy: which addresses a rollout may name, with what credentials.

A ModelRollout is tenant input; the allowlist is the cluster admin's. Matching is
on canonical endpoints, so spellings of one address match and look-alikes do not.
"""

from __future__ import annotations

import pytest

from modelrollout.analysis.policy import (
    Allowed,
    Credentials,
    Endpoint,
    MalformedAddress,
    PrometheusPolicy,
    Refused,
    canonical,
    printable,
)

DEFAULT = "http://prometheus.monitoring:9090"
OTHER = "https://thanos.observability.svc:10902/prom"


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        pytest.param(DEFAULT, Endpoint("http", "prometheus.monitoring", 9090, ""), id="plain"),
        pytest.param(
            "HTTP://Prometheus.MONITORING:9090/",
            Endpoint("http", "prometheus.monitoring", 9090, ""),
            id="case-and-trailing-slash",
        ),
        pytest.param("http://prom", Endpoint("http", "prom", 80, ""), id="http-default-port"),
        pytest.param("https://prom/", Endpoint("https", "prom", 443, ""), id="https-default-port"),
        pytest.param(
            "https://thanos:10902/prom//", Endpoint("https", "thanos", 10902, "/prom"), id="path"
        ),
        pytest.param("http://[::1]:9090", Endpoint("http", "::1", 9090, ""), id="ipv6"),
        pytest.param("http://10.0.0.7:9090", Endpoint("http", "10.0.0.7", 9090, ""), id="ipv4"),
    ],
)
def test_spellings_of_one_address_have_one_canonical_endpoint(
    address: str, endpoint: Endpoint
) -> None:
    assert canonical(address) == endpoint


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("http://prometheus.monitoring:9090.evil.com", id="port-prefix-trick"),
        pytest.param("http://prometheus.monitoring:9090@evil.com", id="userinfo-at-trick"),
        pytest.param("http://user:pw@prometheus.monitoring:9090", id="userinfo"),
        pytest.param("http://evil.com#@prometheus.monitoring:9090", id="fragment-at-trick"),
        pytest.param("http://evil.com?@prometheus.monitoring:9090", id="query-at-trick"),
        pytest.param("http://evil.com\\@prometheus.monitoring:9090", id="backslash-trick"),
        pytest.param("http://prometheus.monitoring:9090/?", id="empty-query"),
        pytest.param("http://prometheus.monitoring:9090/api/../x", id="dot-segments"),
        pytest.param("http://prometheus.monitoring:99999", id="port-out-of-range"),
        pytest.param("http://prometheus.monitoring:0", id="port-zero"),
        pytest.param("ftp://prometheus.monitoring:9090", id="scheme"),
        pytest.param("prometheus.monitoring:9090", id="no-scheme"),
        pytest.param("http://", id="no-host"),
        pytest.param("http://prometheus.monitoring:9090\n", id="newline"),
        pytest.param(" http://prometheus.monitoring:9090", id="space"),
        pytest.param("http://prometheus.mönitoring:9090", id="non-ascii"),
        pytest.param("http://prom_etheus:9090", id="underscore-host"),
        pytest.param("http://[evil.com]:9090", id="brackets-around-a-name"),
        pytest.param("", id="empty"),
    ],
)
def test_look_alike_and_unusual_addresses_are_malformed(address: str) -> None:
    with pytest.raises(MalformedAddress):
        canonical(address)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        pytest.param(None, DEFAULT, id="none-means-the-default"),
        pytest.param(DEFAULT, DEFAULT, id="the-default-by-name"),
        pytest.param("http://PROMETHEUS.monitoring:9090///", DEFAULT, id="default-respelled"),
        pytest.param("https://thanos.observability.svc:10902/prom/", OTHER, id="allowlisted"),
        pytest.param("http://prometheus.monitoring:9091", None, id="other-port"),
        pytest.param("https://prometheus.monitoring:9090", None, id="other-scheme"),
        pytest.param("http://prometheus.monitoring:9090/x", None, id="other-path"),
        pytest.param("https://thanos.observability.svc:10902", None, id="prefix-of-a-path"),
        pytest.param("http://prometheus.monitoring.:9090", None, id="trailing-dot-is-another-name"),
        pytest.param("http://prometheus.monitoring:9090.evil.com", None, id="port-prefix-trick"),
        pytest.param("http://prometheus.monitoring:9090@evil.com", None, id="userinfo-trick"),
        pytest.param("http://127.0.0.1:8080", None, id="anything-else"),
    ],
)
def test_a_rollout_reaches_only_what_the_admin_allowed(
    address: str | None, allowed: str | None
) -> None:
    policy = PrometheusPolicy(DEFAULT, allowed=[OTHER])
    answer = policy.resolve(address)
    if allowed is None:
        assert isinstance(answer, Refused)
        assert answer.reason == "PrometheusNotAllowed"
    else:
        assert isinstance(answer, Allowed)
        assert answer.url == allowed


def test_requests_go_to_the_admins_spelling_not_the_tenants() -> None:
    policy = PrometheusPolicy(DEFAULT)
    answer = policy.resolve("HTTP://prometheus.MONITORING:9090/")
    assert isinstance(answer, Allowed)
    assert answer.url == DEFAULT


def test_a_refusal_names_the_address_the_flag_and_the_helm_value_and_nothing_long() -> None:
    policy = PrometheusPolicy(DEFAULT)
    hostile = "http://trap.example:1/" + "\x1b[31mA\r\n" * 500
    answer = policy.resolve(hostile)
    assert isinstance(answer, Refused)
    assert "not allowed by the operator's policy" in answer.message
    assert "--prometheus-allow" in answer.message
    assert "prometheus.allowedAddresses" in answer.message
    assert "\x1b" not in answer.message
    assert "\n" not in answer.message
    assert "\r" not in answer.message
    assert len(answer.message) < 400


def test_credentials_belong_to_one_address_and_allow_it() -> None:
    token = Credentials(token_file="/etc/a/token")
    policy = PrometheusPolicy(
        DEFAULT,
        allowed=["http://other:9090"],
        credentials={"https://thanos.observability.svc:10902/prom/": token},
    )
    by_url = {a.url: a.credentials for a in policy.allowed}
    assert by_url == {
        DEFAULT: Credentials(),
        "http://other:9090": Credentials(),
        "https://thanos.observability.svc:10902/prom/": token,
    }


def test_two_sets_of_credentials_for_one_endpoint_are_an_error() -> None:
    with pytest.raises(ValueError, match="two sets of credentials"):
        PrometheusPolicy(
            DEFAULT,
            default_credentials=Credentials(token_file="/a"),
            credentials={"HTTP://prometheus.monitoring:9090/": Credentials(token_file="/b")},
        )


def test_a_malformed_allowlist_entry_stops_the_operator_with_the_address() -> None:
    with pytest.raises(ValueError, match="evil"):
        PrometheusPolicy(DEFAULT, allowed=["http://prom:9090@evil"])


@pytest.mark.parametrize(
    ("text", "address", "creds"),
    [
        pytest.param(
            "http://p:9090,token-file=/t",
            "http://p:9090",
            Credentials(token_file="/t"),
            id="token",
        ),
        pytest.param(
            "https://p,basic-auth-file=/b,ca-file=/ca.pem",
            "https://p",
            Credentials(basic_auth_file="/b", ca_file="/ca.pem"),
            id="basic-and-ca",
        ),
    ],
)
def test_credentials_flags_parse(text: str, address: str, creds: Credentials) -> None:
    assert Credentials.parse(text) == (address, creds)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("http://p:9090", id="no-file"),
        pytest.param("http://p:9090,password=/x", id="unknown-key"),
        pytest.param("http://p:9090,token-file=", id="empty-path"),
    ],
)
def test_credentials_flags_that_name_no_known_file_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="token-file"):
        Credentials.parse(text)


def test_printable_strips_control_characters_and_bounds_the_length() -> None:
    assert printable("a\x00b\x1b[0m\tc\u2028d") == "a b [0m c d"
    assert printable("x" * 500, limit=10) == "x" * 9 + "…"
