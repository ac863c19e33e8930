"""``modelrollout run``: start the operator."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from typing import Any

from modelrollout.analysis.policy import Credentials
from modelrollout.api.base import DEFAULT_PROMETHEUS_URL, parse_duration


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="run the operator", description="Run the operator.")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeat for several; default: all namespaces)",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--prometheus",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS", DEFAULT_PROMETHEUS_URL),
        help="Prometheus URL used when a rollout names none (env MODELROLLOUT_PROMETHEUS)",
    )
    p.add_argument(
        "--prometheus-allow",
        action="append",
        metavar="ADDRESS",
        default=_env_list("MODELROLLOUT_PROMETHEUS_ALLOW"),
        help="another Prometheus a rollout may name in analysis.prometheus.address (repeat; "
        "env MODELROLLOUT_PROMETHEUS_ALLOW, comma-separated). --prometheus is always allowed; "
        "a rollout naming any other address is refused and nothing is sent to it",
    )
    p.add_argument(
        "--prometheus-credentials",
        action="append",
        metavar="ADDRESS,KEY=PATH,...",
        default=[],
        help="credential files for one Prometheus, sent to that address only: "
        "token-file=PATH, basic-auth-file=PATH ('user:password'), ca-file=PATH "
        "(repeat; the address is then allowed too)",
    )
    p.add_argument(
        "--prometheus-token-file",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS_TOKEN_FILE"),
        help="file holding a bearer token for --prometheus (sent to no other address)",
    )
    p.add_argument(
        "--prometheus-basic-auth-file",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS_BASIC_AUTH_FILE"),
        help="file holding 'user:password' for --prometheus (sent to no other address)",
    )
    p.add_argument(
        "--prometheus-ca",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS_CA"),
        help="CA bundle (PEM) that signed the certificate of --prometheus",
    )
    p.add_argument(
        "--prometheus-timeout",
        default="10s",
        help="longest wait for one Prometheus answer; a slower one is no answer (inconclusive)",
    )
    p.add_argument(
        "--tick",
        default="5s",
        help="the longest an active rollout with a due check or pause sleeps between "
        "reconciles (rollouts are woken by changes and due times; finished ones never poll)",
    )
    p.add_argument(
        "--resync",
        default="5m",
        help="the longest an active rollout with nothing due sleeps (a safety net for "
        "changes no watch reported); finished rollouts are never resynced",
    )
    p.add_argument(
        "--guard-interval",
        default="2s",
        help="how often the fast guard judges every running rollout's errorRate, nullRate "
        "and latency gates in batched queries, rolling back one shown bad at once (0s: off)",
    )
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--health-port", type=int, default=8080, help="0 to disable /healthz")
    p.add_argument("--metrics-port", type=int, default=9090, help="0 to disable /metrics")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of /healthz and /metrics")
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering name: several replicas share the work, one acts on a rollout "
        "(with --shards, each shard peers under NAME-shard-I)",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the live replica with the highest one acts (default: random, "
        "so replicas of one Deployment never tie, which would pause them all)",
    )
    p.add_argument(
        "--peering-lifetime",
        default="60s",
        help="how long a silent peer is taken for alive; a killed leader is replaced after it",
    )
    p.add_argument(
        "--max-concurrent-rollouts",
        type=int,
        default=0,
        help="rollouts that may run at once, operator-wide; the rest wait in Pending, in the "
        "order they started to wait (0: no limit)",
    )
    p.add_argument(
        "--max-concurrent-rollouts-per-namespace",
        type=int,
        default=0,
        help="rollouts that may run at once in one namespace (0: no limit)",
    )
    p.add_argument(
        "--notifications-file",
        default=os.environ.get("MODELROLLOUT_NOTIFICATIONS_FILE"),
        help="YAML list of default receivers (webhook, slack, cloudEvents with url and "
        "signingSecret) for rollouts whose spec names none; read at start",
    )
    p.add_argument(
        "--notification-retries",
        type=int,
        default=5,
        help="retries of a notification that got no answer, a 408, 429 or 5xx",
    )
    p.add_argument(
        "--notification-backoff",
        default="1s",
        help="first wait before a retry; doubles each time (with jitter), up to 1m",
    )
    p.add_argument(
        "--notification-queue-size",
        type=int,
        default=1000,
        help="notifications that may wait, operator-wide; past that new ones are dropped",
    )
    p.add_argument(
        "--notification-timeout", default="5s", help="how long one delivery attempt may take"
    )
    p.add_argument(
        "--shards",
        type=int,
        default=int(os.environ.get("MODELROLLOUT_SHARDS", "1")),
        help="split the rollouts among this many shards (label modelrollout.io/shard, a hash "
        "of the uid); each shard is one set of replicas (env MODELROLLOUT_SHARDS)",
    )
    p.add_argument(
        "--shard",
        type=int,
        default=int(os.environ.get("MODELROLLOUT_SHARD", "0")),
        help="the shard this replica handles, 0 to shards-1 (env MODELROLLOUT_SHARD)",
    )
    p.add_argument(
        "--identity",
        default=None,
        help="this replica's name in the peering (default: $POD_ID, else user@host/pid)",
    )
    p.add_argument(
        "--field-manager",
        default="modelrollout-operator",
        help="the field manager named in managedFields for status writes",
    )
    p.add_argument(
        "--watch-routes",
        default="gatewayAPI,istio,service",
        help="route kinds whose changes wake their rollouts (comma-separated, or 'none'); "
        "each needs list/watch on its objects",
    )
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.set_defaults(func=run)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def prometheus_credentials(args: argparse.Namespace) -> dict[str, Credentials]:
    """Credential files per address: --prometheus-credentials, and the flags of --prometheus."""
    out: dict[str, Credentials] = {}
    default = Credentials(
        token_file=args.prometheus_token_file,
        basic_auth_file=args.prometheus_basic_auth_file,
        ca_file=args.prometheus_ca,
    )
    if default != Credentials():
        out[args.prometheus] = default
    for text in args.prometheus_credentials:
        address, creds = Credentials.parse(text)
        if address in out:
            raise ValueError(f"credentials for {address} are given twice")
        out[address] = creds
    return out


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from modelrollout.operator.handlers import (
        ROUTE_RESOURCES,
        RunConfig,
        build_registry,
        policy_of,
        source_of,
    )
    from modelrollout.operator.kopf_fixes import patch_drop_managed_fields, patch_toggle_sets
    from modelrollout.operator.metrics import OperatorMetrics
    from modelrollout.operator.notify import Settings
    from modelrollout.operator.sharding import peering_for

    try:
        credentials = prometheus_credentials(args)
    except ValueError as exc:
        raise SystemExit(f"modelrollout run: --prometheus-credentials: {exc}") from None
    if args.shards < 1 or not 0 <= args.shard < args.shards:
        raise SystemExit(f"--shard {args.shard} is not one of 0..{args.shards - 1}")
    watch_routes = tuple(r for r in args.watch_routes.split(",") if r and r != "none")
    unknown = sorted(set(watch_routes) - set(ROUTE_RESOURCES))
    if unknown:
        raise SystemExit(f"--watch-routes: unknown route kinds {unknown}")
    cfg = RunConfig(
        namespaces=[] if args.all_namespaces else list(args.namespace),
        prometheus=args.prometheus,
        prometheus_allow=list(args.prometheus_allow),
        prometheus_credentials=credentials,
        tick=parse_duration(args.tick),
        prometheus_timeout=parse_duration(args.prometheus_timeout),
        resync=parse_duration(args.resync),
        guard_interval=parse_duration(args.guard_interval),
        peering=args.peering,
        priority=args.priority if args.priority is not None else secrets.randbelow(2**31),
        peering_lifetime=int(parse_duration(args.peering_lifetime)),
        shard=args.shard,
        shards=args.shards,
        field_manager=args.field_manager,
        watch_routes=watch_routes,
        kubeconfig=args.kubeconfig,
        context=args.context,
        metrics=OperatorMetrics(),
        max_rollouts=args.max_concurrent_rollouts,
        max_rollouts_per_namespace=args.max_concurrent_rollouts_per_namespace,
        notifications_file=args.notifications_file,
        notifications=Settings(
            capacity=args.notification_queue_size,
            retries=args.notification_retries,
            backoff=parse_duration(args.notification_backoff),
            timeout=parse_duration(args.notification_timeout),
        ),
    )
    try:
        for allowed in policy_of(cfg).allowed:
            source_of(allowed, cfg)  # every credential file readable, before kopf starts
    except (OSError, ValueError) as exc:
        raise SystemExit(f"modelrollout run: Prometheus policy: {exc}") from None
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    kopf.configure(
        debug=args.log_level == "debug",
        verbose=args.log_level == "debug",
        quiet=args.log_level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(args.log_level.upper())
    if args.log_level != "debug":
        # kopf logs every successful timer run at INFO; our own log and Events say what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.metrics_port:
        cfg.metrics.serve(args.metrics_port, args.bind_address)
    patch_toggle_sets()  # thousands of rollouts: no O(N²) wake-ups before handling starts
    patch_drop_managed_fields()  # no copy of the apply bookkeeping in every live body
    registry = build_registry(cfg)
    peering = peering_for(cfg.peering, cfg.shard, cfg.shards) if cfg.peering else None
    health = f"http://{args.bind_address}:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=peering is None,
            peering_name=peering,
            identity=args.identity,  # kopf's Identity is a NewType of str
            priority=cfg.priority,
            namespaces=cfg.namespaces,
            clusterwide=not cfg.namespaces,
            liveness_endpoint=health,
        )
    )
    return 0
