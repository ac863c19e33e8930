"""The kubectl plugin: ``kubectl modelrollout list|status|promote|abort|pause|resume|retry|
undo|set-candidate|history|report|dashboard``.

Humans steer a rollout without editing its manifest: a command writes the
annotation ``modelrollout.io/request: <verb>:<unique id>`` and the operator
acts on each id once. The manifest stays what GitOps applied, and a request
cannot be replayed by accident (a re-apply carries no new id).

Before it writes, a command checks that it makes sense in the rollout's phase
(:func:`refusal`) and says why not, with exit code 4: the operator would
ignore it anyway, but only with an Event the user may never read.

The pure parts (:func:`refusal`, :func:`watch_outcome`) come first; the
handlers below them do the I/O through :class:`~modelrollout.cli.kube.Kube`
and show what :mod:`modelrollout.cli.view` computes as :mod:`modelrollout.cli.render` draws it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from modelrollout.api.base import REQUEST_ANNOTATION, parse_duration
from modelrollout.api.status import Phase
from modelrollout.cli import render, view
from modelrollout.cli.kube import (
    EXIT_FAILED,
    EXIT_FORBIDDEN,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    EXIT_UNREACHABLE,
    CliError,
    Kube,
)
from modelrollout.engine.decide import PAUSE_APPROVAL, PAUSE_SPEC
from modelrollout.engine.types import RequestVerb

Obj = Mapping[str, Any]

#: How ``status --watch`` exits for each way a rollout can end.
OUTCOME_EXIT: dict[str, int] = {
    Phase.SUCCEEDED: EXIT_OK,
    Phase.ROLLED_BACK: EXIT_ROLLED_BACK,
    Phase.FAILED: EXIT_FAILED,
}

#: How long ``status --watch`` keeps trying when the API server stops answering mid-watch.
WATCH_UNREACHABLE_GRACE = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------- pure rules


def refusal(verb: RequestVerb, obj: Obj, now: datetime | None = None) -> str | None:
    """Why ``verb`` makes no sense for this rollout now, or None when it may be sent.

    Mirrors what the engine does with a request (``engine.decide``): a request
    it would ignore is refused here, where the user is looking. ``now`` (for
    ``undo``'s window) defaults to the clock.
    """
    status = obj.get("status") or {}
    name = view.name_of(obj)
    phase = str(status.get("phase") or Phase.PENDING)
    reason = status.get("pauseReason")
    it = f'modelrollout "{name}" is {phase}'
    if verb == RequestVerb.UNDO:
        return _undo_refusal(it, status, now or _now())
    ends = (RequestVerb.PROMOTE, RequestVerb.PROMOTE_FULL, RequestVerb.ABORT, RequestVerb.PAUSE)
    if verb in ends and phase in view.TERMINAL_PHASES:
        hint = (
            "set-candidate starts a new rollout"
            if phase == Phase.SUCCEEDED
            else f"retry starts {status.get('candidateVersion') or 'the candidate'} again"
        )
        return f"{it}: it has ended, nothing to {verb.value.replace('-full', '')} ({hint})"
    if verb == RequestVerb.PROMOTE and phase == Phase.PAUSED and reason == PAUSE_SPEC:
        return f"{it} by spec.paused: set spec.paused to false in the manifest to go on"
    if verb == RequestVerb.PAUSE and phase == Phase.PAUSED:
        return f'modelrollout "{name}" is already Paused ({reason or "paused"})'
    if verb == RequestVerb.RESUME:
        if phase != Phase.PAUSED:
            return f"{it}, not Paused: nothing to resume"
        if reason == PAUSE_SPEC:
            return f"{it} by spec.paused: set spec.paused to false in the manifest to resume"
        if reason == PAUSE_APPROVAL or status.get("awaitingApproval"):
            checkpoint = status.get("awaitingApproval") or "a gate"
            return (
                f"{it}, waiting for approval at {checkpoint}: "
                f"use `kubectl modelrollout promote {name}` to pass it"
            )
    if verb == RequestVerb.RETRY:
        if phase not in view.STOPPED_PHASES:
            return f"{it}: retry only follows a rollback or a failure"
        candidate = status.get("candidateVersion")
        if not candidate or candidate == status.get("stableVersion"):
            return f"{it} with no candidate to retry (it is the stable version, or none ran)"
    return None


def _undo_refusal(it: str, status: Obj, now: datetime) -> str | None:
    previous = status.get("previousStableVersion")
    if status.get("phase") != Phase.SUCCEEDED or not previous:
        if status.get("phase") in view.TERMINAL_PHASES:
            return f"{it}: undo only follows a promotion"
        return f"{it}: undo only follows a promotion; abort stops a rollout in progress"
    until = status.get("undoUntil")
    ends = view.parse_time(until)
    if ends is None:
        return (
            f"{it}: spec.rollbackWindow was not set at the promotion, so there is no undo "
            f"window (set-candidate {previous} rolls back out as a new rollout)"
        )
    if now >= ends:
        return (
            f"{it}: the rollback window to {previous} closed at {until} "
            f"(set-candidate {previous} rolls it back out as a new rollout)"
        )
    return None


def settled(obj: Obj) -> bool:
    """Has the operator caught up with everything the user asked of this object?

    A terminal phase only means the rollout ended once the operator has seen
    the current spec (``observedGeneration``), started the candidate the spec
    names, and handled the last request. Without these checks, ``set-candidate``
    or ``retry`` followed at once by ``status --watch`` would report the
    *previous* rollout's outcome.
    """
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return False
    request = (meta.get("annotations") or {}).get(REQUEST_ANNOTATION)
    if request and request != status.get("handledRequest"):
        return False
    wanted = ((obj.get("spec") or {}).get("candidate") or {}).get("version")
    running = status.get("candidateVersion")
    ended = status.get("phase") in (Phase.SUCCEEDED, Phase.ROLLED_BACK)
    return not (ended and wanted and running != wanted)


def watch_outcome(obj: Obj) -> int | None:
    """The exit code of ``status --watch`` if the rollout has ended, else None."""
    phase = (obj.get("status") or {}).get("phase")
    if phase not in OUTCOME_EXIT or not settled(obj):
        return None
    return OUTCOME_EXIT[str(phase)]


def request_value(verb: RequestVerb, now: datetime, unique: str | None = None) -> str:
    """``promote:20260101T120000Z-3f2a9c1b0d4e``: sortable by time, unique by the uuid part."""
    return f"{verb.value}:{now.strftime('%Y%m%dT%H%M%SZ')}-{unique or uuid.uuid4().hex[:12]}"


def parse_timeout(text: str) -> float:
    """``--timeout``: a Go duration (``90s``, ``10m``, ``1h``) as kubectl takes, or seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


# --------------------------------------------------------------------------- parsers


def common_flags() -> argparse.ArgumentParser:
    """--kubeconfig, --context and -n, which every plugin command takes (as a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", help="kubeconfig context (default: the current context)")
    common.add_argument(
        "-n", "--namespace", help="namespace (default: the context's namespace, else default)"
    )
    return common


def add_parsers(sub: Any) -> None:
    """Register the plugin commands; each takes --kubeconfig, --context and -n."""
    common = common_flags()

    p = sub.add_parser(
        "list",
        parents=[common],
        aliases=["ls"],
        help="list rollouts",
        description="List ModelRollouts with their phase, step, weights and worst gate.",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-l", "--selector", help="label selector, e.g. team=fraud")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml"], help="output format")
    p.set_defaults(func=_entry(cmd_list))

    p = sub.add_parser(
        "status",
        parents=[common],
        help="show one rollout in detail (--watch: follow it to the end)",
        description="Show the strategy and where the rollout is in it, traffic, the last "
        "analysis, conditions and recent Events. With --watch, follow it until it ends; "
        "the exit code says how: 0 Succeeded, 1 RolledBack, 2 Failed, 3 timeout/interrupted.",
    )
    p.add_argument("name")
    p.add_argument("-w", "--watch", action="store_true", help="follow until the rollout ends")
    p.add_argument(
        "--timeout", type=parse_timeout, help="with --watch: give up after this long (e.g. 30m)"
    )
    p.add_argument(
        "--interval", type=parse_timeout, default=2.0, help="with --watch: poll interval (2s)"
    )
    p.add_argument("--events", type=int, default=10, help="how many recent Events to show")
    p.set_defaults(func=_entry(cmd_status))

    requests = [
        ("promote", "pass the current gate or pause (--full: skip all remaining steps)"),
        ("abort", "send all traffic back to stable now"),
        ("pause", "hold the rollout where it is"),
        ("resume", "lift a pause set by `pause` or by inconclusive analysis"),
        ("retry", "start a rolled-back or failed candidate again from the beginning"),
        (
            "undo",
            "within the rollback window after a promotion: all traffic back to the previous "
            "version at once",
        ),
    ]
    for verb, text in requests:
        p = sub.add_parser(
            verb, parents=[common], help=text, description=text[0].upper() + text[1:] + "."
        )
        p.add_argument("name")
        if verb == "promote":
            p.add_argument(
                "--full", action="store_true", help="promote now, skipping every remaining step"
            )
        p.set_defaults(func=_entry(cmd_request), verb=verb)

    p = sub.add_parser(
        "set-candidate",
        parents=[common],
        help="roll out another version (patches spec.candidate.version)",
        description="Set spec.candidate.version, which starts a new rollout. A GitOps tool "
        "(Argo CD, Flux) may revert it if the manifest says otherwise.",
    )
    p.add_argument("name")
    p.add_argument("version")
    p.set_defaults(func=_entry(cmd_set_candidate))

    p = sub.add_parser(
        "history",
        parents=[common],
        help="past rollouts of one ModelRollout and their outcomes",
        description="Past rollouts (from status.history): when each started, the candidate, "
        "how it ended, how long it took and why.",
    )
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")
    p.set_defaults(func=_entry(cmd_history))

    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a PNG/HTML report of a rollout",
        description="Write a timeline of candidate weight, mirror share and each gate's value "
        "against its limit, with markers for steps, pauses, promotion and rollback. "
        "-o x.png writes a PNG, -o x.html a self-contained page, -o x both.",
    )
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="x.png, x.html or x")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="also draw each gate's query over the whole rollout from this Prometheus",
    )
    p.set_defaults(func=_entry(cmd_report))


def _entry(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn CliError into its message on stderr and its exit code; Ctrl-C into exit 3."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    run.__doc__ = handler.__doc__
    return run


def _kube(args: argparse.Namespace) -> Kube:
    return Kube.connect(args.kubeconfig, args.context, args.namespace)


def _dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False))


# -------------------------------------------------------------------------- handlers


def cmd_list(args: argparse.Namespace) -> int:
    """``list``: kubectl-style table, or the objects themselves for scripts."""
    kube = _kube(args)
    items = kube.list_rollouts(all_namespaces=args.all_namespaces, selector=args.selector)
    if args.output in ("json", "yaml"):
        sys.stdout.write(_dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
        return EXIT_OK
    if not items:
        where = "any namespace" if args.all_namespaces else f'namespace "{kube.namespace}"'
        print(f"No ModelRollouts found in {where}.", file=sys.stderr)
        return EXIT_OK
    sys.stdout.write(
        render.list_table(
            items, _now(), wide=args.output == "wide", all_namespaces=args.all_namespaces
        )
    )
    return EXIT_OK


def _events(kube: Kube, name: str, warned: list[bool]) -> list[dict[str, Any]]:
    """Events are a nice-to-have: a user allowed to read the rollout but not Events still
    gets the status, with a one-time note."""
    try:
        return kube.events(name)
    except CliError as exc:
        if exc.code in (EXIT_FORBIDDEN, EXIT_NOT_FOUND) and not warned:
            print(f"warning: events not shown: {exc.message}", file=sys.stderr)
            warned.append(True)
            return []
        if exc.code in (EXIT_FORBIDDEN, EXIT_NOT_FOUND):
            return []
        raise


def _console() -> Any:
    from rich.console import Console

    wide = sys.stdout.isatty() or os.environ.get("COLUMNS")
    return Console(width=None if wide else 120, highlight=False)


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: the whole picture once, or followed with --watch."""
    kube = _kube(args)
    obj = kube.get(args.name)
    warned: list[bool] = []
    if not args.watch:
        _console().print(render.status_view(obj, _events(kube, args.name, warned), _now(),
                                            max_events=args.events))  # fmt: skip
        return EXIT_OK
    return _watch(kube, args, obj, warned)


def _watch(kube: Kube, args: argparse.Namespace, obj: dict[str, Any], warned: list[bool]) -> int:
    """Poll the rollout until it ends; redraw in a terminal, a line per change otherwise.

    Polling (not an API watch) keeps it simple to bound by ``--timeout`` and
    to ride out a short API outage; at a 2s interval it costs two GETs per
    interval, which is nothing next to the operator's own reads.
    """
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout
    tty = sys.stdout.isatty()
    console = _console()
    last_line = ""
    unreachable_since: float | None = None

    def fetch() -> dict[str, Any] | None:
        nonlocal unreachable_since
        try:
            fresh = kube.get(args.name)
        except CliError as exc:
            if exc.code != EXIT_UNREACHABLE:
                raise
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > WATCH_UNREACHABLE_GRACE:
                raise
            if live is None and unreachable_since == now:
                print(f"{exc.message} (retrying)", file=sys.stderr, flush=True)
            return None
        unreachable_since = None
        return fresh

    def print_line(current: Obj) -> None:
        nonlocal last_line
        line = render.status_line(current)
        if line != last_line:
            stamp = _now().strftime("%H:%M:%S")
            print(
                f"{stamp} {view.namespace_of(current)}/{view.name_of(current)} {line}",
                flush=True,
            )
            last_line = line

    def draw(current: Obj) -> Any:
        return render.status_view(
            current, _events(kube, args.name, warned), _now(), max_events=args.events
        )

    live: Any = None
    if tty:
        from rich.live import Live

        live = Live("", console=console, auto_refresh=False, transient=False)
        live.start()
    try:
        while True:
            code = watch_outcome(obj)
            if live is not None:
                live.update(draw(obj), refresh=True)
            else:
                print_line(obj)
            if code is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                phase = (obj.get("status") or {}).get("phase") or Phase.PENDING
                raise CliError(
                    f"timed out after {view.fmt_duration(args.timeout)}: modelrollout "
                    f'"{args.name}" is still {phase}',
                    EXIT_INTERRUPTED,
                )
            pause = args.interval
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            fresh = fetch()
            if fresh is not None:
                obj = fresh
    finally:
        if live is not None:
            live.stop()
    status = obj.get("status") or {}
    message = f": {status['message']}" if status.get("message") else ""
    print(f'modelrollout "{args.name}" {status.get("phase")}{message}', flush=True)
    return code


def cmd_request(args: argparse.Namespace) -> int:
    """``promote``/``abort``/``pause``/``resume``/``retry``/``undo``: one annotation, checked
    first."""
    verb = RequestVerb(args.verb)
    if verb == RequestVerb.PROMOTE and getattr(args, "full", False):
        verb = RequestVerb.PROMOTE_FULL
    kube = _kube(args)
    obj = kube.get(args.name)
    why = refusal(verb, obj)
    if why is not None:
        raise CliError(f"refused: {why}", EXIT_REFUSED)
    meta = obj.get("metadata") or {}
    pending = (meta.get("annotations") or {}).get(REQUEST_ANNOTATION)
    handled = (obj.get("status") or {}).get("handledRequest")
    if pending and pending != handled:
        print(
            f"warning: the previous request {pending!r} has not been handled yet; it is replaced",
            file=sys.stderr,
        )
    value = request_value(verb, _now())
    kube.patch(args.name, {"metadata": {"annotations": {REQUEST_ANNOTATION: value}}})
    print(
        f'modelrollout "{args.name}" {verb.value} requested ({REQUEST_ANNOTATION}={value}); '
        "the operator acts on it at its next reconcile"
    )
    return EXIT_OK


def cmd_set_candidate(args: argparse.Namespace) -> int:
    """``set-candidate``: a spec change, so a new rollout, with the GitOps caveat said aloud."""
    kube = _kube(args)
    obj = kube.get(args.name)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    current = (spec.get("candidate") or {}).get("version")
    if current == args.version:
        raise CliError(
            f'refused: {args.version} is already the candidate of modelrollout "{args.name}"',
            EXIT_REFUSED,
        )
    kube.patch(args.name, {"spec": {"candidate": {"version": args.version}}})
    print(
        f'warning: spec.candidate.version of modelrollout "{args.name}" changed outside its '
        "manifest; a GitOps tool (Argo CD, Flux) may revert it if the manifest says otherwise",
        file=sys.stderr,
    )
    if args.version == status.get("stableVersion"):
        what = f"{args.version} is the stable version: no rollout, traffic stays on it"
    elif status.get("phase") not in (*view.TERMINAL_PHASES, None, Phase.PENDING):
        what = f"replaces the rollout of {current} in progress with a new one"
    else:
        what = "a new rollout starts"
    print(f'modelrollout "{args.name}" candidate {current} -> {args.version}: {what}')
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    """``history``: the rollouts this object has been through, one line each."""
    kube = _kube(args)
    obj = kube.get(args.name)
    records = view.group_history(obj.get("status") or {}, _now())
    if args.output:
        sys.stdout.write(_dump([asdict(r) for r in records], args.output))
        return EXIT_OK
    if not records:
        print(f'modelrollout "{args.name}" has no history yet', file=sys.stderr)
        return EXIT_OK
    sys.stdout.write(render.history_table(records))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: PNG and/or HTML from the object's own history and ledger."""
    from modelrollout.analysis.source import PrometheusSource
    from modelrollout.cli import report

    report.require_matplotlib()
    kube = _kube(args)
    obj = kube.get(args.name)
    now = _now()
    timeline = view.build_timeline(obj, now)
    if args.prometheus and timeline.traffic:
        start = min(t for t, _, _ in timeline.traffic)
        gathered = report.prometheus_series(
            obj, PrometheusSource(args.prometheus), start, timeline.end
        )
        timeline.prometheus = gathered.series
        timeline.notes = gathered.notes
        timeline.prometheus_url = args.prometheus
        for warning in gathered.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    for path in report.write_report(obj, args.output, now, timeline):
        print(f"wrote {path}")
    return EXIT_OK
