"""``modelrollout run``: start the operator."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from typing import Any

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
        "--prometheus-token-file",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS_TOKEN_FILE"),
        help="file holding a bearer token for Prometheus",
    )
    p.add_argument(
        "--prometheus-basic-auth-file",
        default=os.environ.get("MODELROLLOUT_PROMETHEUS_BASIC_AUTH_FILE"),
        help="file holding 'user:password' for Prometheus",
    )
    p.add_argument("--prometheus-ca", default=os.environ.get("MODELROLLOUT_PROMETHEUS_CA"))
    p.add_argument("--tick", default="5s", help="how often each rollout is reconciled")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--health-port", type=int, default=8080, help="0 to disable /healthz")
    p.add_argument("--metrics-port", type=int, default=9090, help="0 to disable /metrics")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of /healthz and /metrics")
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering name: several replicas share the work, one acts on a rollout",
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
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.set_defaults(func=run)


def _read(path: str | None) -> str | None:
    if not path:
        return None
    with open(path) as f:
        return f.read().strip()


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from modelrollout.operator.handlers import RunConfig, build_registry
    from modelrollout.operator.metrics import OperatorMetrics

    basic = _read(args.prometheus_basic_auth_file)
    cfg = RunConfig(
        namespaces=[] if args.all_namespaces else list(args.namespace),
        prometheus=args.prometheus,
        prometheus_token=_read(args.prometheus_token_file),
        prometheus_basic_auth=tuple(basic.split(":", 1)) if basic else None,  # type: ignore[arg-type]
        prometheus_ca=args.prometheus_ca,
        tick=parse_duration(args.tick),
        peering=args.peering,
        priority=args.priority if args.priority is not None else secrets.randbelow(2**31),
        peering_lifetime=int(parse_duration(args.peering_lifetime)),
        kubeconfig=args.kubeconfig,
        context=args.context,
        metrics=OperatorMetrics(),
    )
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
    registry = build_registry(cfg)
    health = f"http://{args.bind_address}:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=cfg.peering is None,
            peering_name=cfg.peering,
            priority=cfg.priority,
            namespaces=cfg.namespaces,
            clusterwide=not cfg.namespaces,
            liveness_endpoint=health,
        )
    )
    return 0
