"""``kubectl modelrollout dashboard``: a live, read-only view of the rollouts in a browser.

The CLI serves a small page on loopback (the standard library's
``http.server``; the page is static HTML, JS and CSS shipped as package data,
no build step). The page polls one JSON endpoint, ``/api/rollouts``, which
reads through the same client, kubeconfig and RBAC as ``list``: one list of
ModelRollouts and one list of their Events per refresh, nothing else, and it
never writes. Without ``list events`` the page still works and says that
events are not shown.

Each rollout's timeline is the one ``report`` draws, built by the pure
:func:`modelrollout.cli.view.build_timeline` and drawn as inline SVG
(:mod:`modelrollout.cli.timeline_svg`), so the page needs no matplotlib.

It listens on 127.0.0.1 only and answers only requests whose ``Host`` is
that address or ``localhost``, so a web page elsewhere cannot read the
cluster through it by DNS rebinding; a Content-Security-Policy allows the
page's own script and nothing inline.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from modelrollout.api.base import format_ts
from modelrollout.cli import view
from modelrollout.cli.kube import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK, CliError, Kube
from modelrollout.cli.timeline_svg import timeline_svg

Obj = Mapping[str, Any]

LOOPBACK = "127.0.0.1"
#: How many recent Events each rollout shows.
EVENTS_PER_ROLLOUT = 5

#: Path -> (file in the package's ``static`` folder, content type).
ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------ the page's data (pure)


def rollout_card(obj: Obj, events: Sequence[Obj], now: datetime) -> dict[str, Any]:
    """One rollout as the page shows it: the ``list`` row, its gates, events and timeline."""
    row = view.list_row(obj, now)
    status = obj.get("status") or {}
    weights = status.get("weights") or {}
    candidate_weight = int(weights.get("candidate", 0) or 0)
    gates = [
        view.gate_line(r)
        for r in view.dig(status, "lastAnalysis", "results") or []
        if isinstance(r, Mapping)
    ]
    return {
        "key": f"{row.namespace}/{row.name}",
        "namespace": row.namespace,
        "name": row.name,
        "model": row.model,
        "stable": row.stable,
        "candidate": row.candidate,
        "phase": row.phase,
        "stage": row.stage,
        "step": row.step,
        "weights": {
            "stable": int(weights.get("stable", 100 - candidate_weight) or 0),
            "candidate": candidate_weight,
        },
        "mirror": int(status.get("mirrorPercent", 0) or 0),
        "approximate": bool(status.get("weightsApproximate")),
        "gates": [
            {"metric": g.metric, "value": g.value, "limit": g.limit, "verdict": g.verdict}
            for g in gates
        ],
        "lastCheck": row.last_check,
        "message": row.message,
        "nextAction": view.next_action(obj),
        "age": row.age,
        "events": [
            {"when": e.when, "type": e.type, "reason": e.reason, "message": e.message}
            for e in (
                view.event_line(ev, now)
                for ev in reversed(view.recent_events(events, EVENTS_PER_ROLLOUT))
            )
        ],
        "timelineSvg": timeline_svg(view.build_timeline(obj, now)),
    }


def snapshot(
    items: Sequence[Obj],
    events: Sequence[Obj],
    now: datetime,
    *,
    scope: str,
    poll_seconds: float,
    events_note: str | None = None,
) -> dict[str, Any]:
    """What ``/api/rollouts`` answers: every rollout's card, with its own Events."""
    by_rollout: dict[tuple[str, str], list[Obj]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        key = (str(involved.get("namespace") or ""), str(involved.get("name") or ""))
        by_rollout.setdefault(key, []).append(event)
    return {
        "scope": scope,
        "at": format_ts(now),
        "pollMs": int(poll_seconds * 1000),
        "eventsNote": events_note,
        "rollouts": [
            rollout_card(obj, by_rollout.get((view.namespace_of(obj), view.name_of(obj)), []), now)
            for obj in items
        ],
    }


def host_allowed(host: str | None, port: int) -> bool:
    """Only requests addressed to the loopback listener itself (no DNS rebinding)."""
    return host in (f"{LOOPBACK}:{port}", f"localhost:{port}")


# ------------------------------------------------------------------------------ serving


class Reader:
    """Reads the rollouts and their Events once per refresh, as ``list`` does."""

    def __init__(
        self,
        kube: Kube,
        *,
        all_namespaces: bool,
        selector: str | None,
        poll_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.all_namespaces = all_namespaces
        self.selector = selector
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.scope = "all namespaces" if all_namespaces else f"namespace {kube.namespace}"

    def read(self) -> dict[str, Any]:
        items = self.kube.list_rollouts(all_namespaces=self.all_namespaces, selector=self.selector)
        events: list[dict[str, Any]] = []
        note = None
        try:
            events = self.kube.rollout_events(all_namespaces=self.all_namespaces)
        except CliError as exc:
            if exc.code not in (EXIT_FORBIDDEN, EXIT_NOT_FOUND):
                raise
            note = f"events not shown: {exc.message}"
        return snapshot(
            items,
            events,
            self.clock(),
            scope=self.scope,
            poll_seconds=self.poll_seconds,
            events_note=note,
        )


def port_of(server: Any) -> int:
    """The port a server listens on (after binding port 0)."""
    return int(server.server_address[1])


def _asset(name: str) -> bytes:
    return (resources.files("modelrollout.cli") / "static" / name).read_bytes()


def make_server(reader: Reader, port: int = 0) -> ThreadingHTTPServer:
    """A server on loopback (``port`` 0: a free one); start it with ``serve_forever``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "modelrollout-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the terminal shows the URL, not a line per poll

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, json.dumps(data).encode(), "application/json")

        def do_GET(self) -> None:
            if not host_allowed(self.headers.get("Host"), port_of(self.server)):
                self._send(403, b"forbidden: use http://127.0.0.1 or localhost\n", "text/plain")
                return
            path = self.path.split("?", 1)[0]
            if path == "/api/rollouts":
                try:
                    self._json(200, reader.read())
                except CliError as exc:
                    self._json(502, {"error": exc.message})
                return
            if path in ASSETS:
                name, content_type = ASSETS[path]
                self._send(200, _asset(name), content_type)
                return
            self._send(404, b"not found\n", "text/plain")

        do_HEAD = do_GET

    server = ThreadingHTTPServer((LOOPBACK, port), Handler)
    server.daemon_threads = True
    return server


# ------------------------------------------------------------------------------ command


def add_parsers(sub: Any) -> None:
    from modelrollout.cli.commands import common_flags, parse_timeout

    p = sub.add_parser(
        "dashboard",
        parents=[common_flags()],
        help="a live read-only view of the rollouts in a browser (served on loopback)",
        description="Serve a small read-only page on http://127.0.0.1 that lists the "
        "rollouts with their phase, weights and gate values, updated live, and each "
        "rollout's timeline. It reads with the same RBAC as `list` (list modelrollouts; "
        "list events, optional). Ctrl-C stops it.",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-l", "--selector", help="label selector, e.g. team=fraud")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument(
        "--interval", type=parse_timeout, default=2.0, help="how often the page refreshes (2s)"
    )
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``dashboard``: check access once (so RBAC fails here, with its exit code), then serve."""
    try:
        kube = Kube.connect(args.kubeconfig, args.context, args.namespace)
        reader = Reader(
            kube,
            all_namespaces=args.all_namespaces,
            selector=args.selector,
            poll_seconds=max(0.5, float(args.interval)),
        )
        first = reader.read()
        server = make_server(reader, args.port)
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        print(f"error: cannot listen on {LOOPBACK}:{args.port}: {exc}", file=sys.stderr)
        return 2
    url = f"http://{LOOPBACK}:{port_of(server)}/"
    print(f"serving {url} ({first['scope']}, {len(first['rollouts'])} rollouts); Ctrl-C stops it")
    if first["eventsNote"]:
        print(f"warning: {first['eventsNote']}", file=sys.stderr)
    sys.stdout.flush()
    if args.open:
        import webbrowser

        threading.Timer(0.2, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK
