"""Given / When / Then helpers for end-to-end tests of the operator in the local cluster."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelrollout_devenv import LocalCluster, PrometheusServer
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import ModelStack, OperatorProcess, TargetRegistry, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"


class World:
    """One test's namespace, with its model servers, traffic and operator."""

    def __init__(
        self, cluster: LocalCluster, prometheus: PrometheusServer, targets: TargetRegistry,
        work_dir: Path, name: str,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.prometheus = prometheus
        self.targets = targets
        self.work_dir = work_dir
        self.ns = f"{name[:40].strip('-')}-{uuid.uuid4().hex[:5]}".lower()
        self.stacks: list[ModelStack] = []
        self.operators: list[OperatorProcess] = []
        cluster.apply(m.namespace(self.ns))

    # -- given -------------------------------------------------------------------

    def apply(self, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self.cluster.apply(obj)

    def kubectl_apply(self, obj: dict[str, Any]) -> Any:
        """Apply as a user does (client-side kubectl apply, strict field validation)."""
        return self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)

    def model(self, model: str, *, objects: bool = True, **kw: Any) -> ModelStack:
        """Model servers and traffic for ``model``; with ``objects``, its Deployments and route too.

        ``objects=False`` when the test applies its own (KServe makes the workloads).
        """
        kw.setdefault("versions", ("v1", "v2"))
        replicas = kw.pop("replicas", ())
        if objects:
            objs = m.model_objects(
                model,
                self.ns,
                kw["versions"],
                router=kw.get("router", "gatewayAPI"),
                replicas=replicas,
            )
            self.apply(*objs)
        stack = ModelStack(
            self.cluster, self.targets, self.work_dir / model, model=model, namespace=self.ns, **kw
        )
        self.stacks.append(stack)
        return stack.start()

    def operator(self, **kw: Any) -> OperatorProcess:
        kw.setdefault("prometheus", self.prometheus.url)
        op = OperatorProcess(
            self.cluster,
            self.work_dir / f"operator-{len(self.operators)}",
            namespaces=[self.ns],
            **kw,
        )
        self.operators.append(op)
        return op.start()

    # -- then --------------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, name, "-n", self.ns, "-o", "json")
        obj: dict[str, Any] = json.loads(out.stdout)
        return obj

    def status(self, name: str) -> dict[str, Any]:
        return self.get("modelrollout", name).get("status") or {}

    def wait_status(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            st = self.status(name)
            return st if check(st) else None

        try:
            result: dict[str, Any] = wait_for(probe, timeout, what)
        except TimeoutError as exc:
            status = json.dumps(self.status(name))[:3000]
            raise AssertionError(f"{exc}\nstatus now: {status}") from None
        return result

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_status(name, lambda s: s.get("phase") == phase, timeout, f"phase {phase}")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "events", "-n", self.ns, "-o", "json",
            "--field-selector", f"involvedObject.name={name},involvedObject.kind=ModelRollout",
        )  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        # Whole-second timestamps; within a second, creation order is resourceVersion order.
        items.sort(
            key=lambda e: (e.get("firstTimestamp") or "", int(e["metadata"]["resourceVersion"]))
        )
        return items

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def route_backends(self, route: str) -> dict[str, int]:
        """Weights of the model rule (the last rule) of an HTTPRoute."""
        rule = self.get("httproute", route)["spec"]["rules"][-1]
        return {r["name"]: r.get("weight", 1) for r in rule["backendRefs"]}

    def route_mirror(self, route: str) -> int:
        rule = self.get("httproute", route)["spec"]["rules"][-1]
        for f in rule.get("filters") or []:
            if f["type"] == "RequestMirror":
                return int(f["requestMirror"].get("percent", 100))
        return 0

    def close(self) -> None:
        for op in self.operators:
            op.stop()
        for stack in self.stacks:
            stack.stop()
        self.cluster.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)


def history(status: dict[str, Any]) -> list[tuple[str, int]]:
    return [(h["reason"], h.get("weight", 0)) for h in status.get("history", [])]


def poll(seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield
        time.sleep(0.5)
