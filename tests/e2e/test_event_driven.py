"""The operator acts on changes and due times, writes only what changed, and scales by shards.

Writes are counted where they land: the local kube-apiserver's own
``apiserver_request_total`` for PATCHes of ``modelrollouts/status``, and
each rollout's ``managedFields`` (every replica here writes under a field
manager of its own).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

from modelrollout.api.base import GROUP, PLURAL, VERSION
from modelrollout.operator.sharding import SHARD_LABEL, shard_of
from modelrollout_devenv import LocalCluster
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import OperatorProcess, wait_for

from .world import ROOT, World

pytestmark = pytest.mark.e2e

NO_GATES: dict[str, Any] = {"interval": "5s", "metrics": []}
QUICK: dict[str, Any] = {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}]}}
HELD: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}

_PATCH_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def status_patches(cluster: LocalCluster) -> float:
    """PATCHes of modelrollouts/status the API server has served since it started."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        match = _PATCH_LINE.match(line)
        if match is None:
            continue
        labels = match["labels"]
        if all(
            f'{k}="{v}"' in labels
            for k, v in (("resource", PLURAL), ("subresource", "status"), ("verb", "PATCH"))
        ):
            total += float(match["value"])
    return total


def reconciles(op: OperatorProcess) -> float:
    for line in op.metrics().splitlines():
        if line.startswith("modelrollout_reconcile_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def rollout_with_route(world: World, name: str, **kw: Any) -> None:
    world.apply(m.http_route(name, world.ns, "v1"), m.rollout(name, world.ns, **kw))


def with_managers(world: World, name: str) -> dict[str, Any]:
    """The rollout with its managedFields (kubectl hides them unless asked)."""
    out = world.cluster.kubectl(
        "get", "modelrollout", name, "-n", world.ns, "-o", "json", "--show-managed-fields"
    )
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def status_managers(obj: dict[str, Any]) -> set[str]:
    return {
        f["manager"]
        for f in obj["metadata"].get("managedFields") or []
        if f.get("subresource") == "status"
    }


# ------------------------------------------------------------------------ idle


def test_finished_and_held_rollouts_get_no_status_writes_and_no_reconciles(world: World) -> None:
    # Given a rollout that finished and one held at a human gate, and an operator at a 1s tick
    rollout_with_route(world, "done", strategy=QUICK, analysis=NO_GATES)
    rollout_with_route(world, "held", strategy=HELD, analysis=NO_GATES)
    op = world.operator(tick="1s")
    world.wait_phase("done", "Succeeded", timeout=60)
    world.wait_phase("held", "Paused", timeout=60)
    time.sleep(3)  # the echo of the operator's own last writes
    patches, runs = status_patches(world.cluster), reconciles(op)
    # When 30 seconds pass
    time.sleep(30)
    # Then neither was written nor even reconciled: nothing polls them
    assert status_patches(world.cluster) - patches == 0
    assert reconciles(op) - runs == 0


def test_a_hand_edited_route_wakes_its_idle_rollout_which_restores_the_weights(
    world: World,
) -> None:
    # Given a rollout held at a human gate with 20% on the candidate, nothing due
    rollout_with_route(world, "edited", strategy=HELD, analysis=NO_GATES)
    world.operator(tick="1s", extra=["--resync", "10m"])
    world.wait_phase("edited", "Paused", timeout=60)
    assert world.route_backends("edited") == {"edited-v1": 80, "edited-v2": 20}
    # When someone sets the route to 50/50 by hand
    rule = json.dumps(
        [{"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 80}]
    )
    world.cluster.kubectl("patch", "httproute", "edited", "-n", world.ns, "--type=json", "-p", rule)
    edited_at = time.monotonic()
    # Then the route's watch wakes the rollout, which puts its weights back at once
    wait_for(
        lambda: world.route_backends("edited") == {"edited-v1": 80, "edited-v2": 20},
        10,
        "the weights restored",
    )
    assert time.monotonic() - edited_at < 10
    assert "TrafficDrift" in world.reasons("edited")
    assert world.status("edited")["phase"] == "Paused"


# ---------------------------------------------------------------------- writes


class StatusChanges:
    """Watches one rollout and counts the updates that changed its status."""

    def __init__(self, world: World, name: str) -> None:
        from kubernetes import client, watch

        self.api = client.CustomObjectsApi(world.cluster.api_client())
        self.watch = watch.Watch()
        self.world, self.name = world, name
        self.changes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last: object = None
        stream = self.watch.stream(
            self.api.list_namespaced_custom_object, GROUP, VERSION, self.world.ns, PLURAL,
            field_selector=f"metadata.name={self.name}", timeout_seconds=300,
        )  # fmt: skip
        with contextlib.suppress(ProtocolError):  # the stream ends when stopped
            for event in stream:
                status = event["object"].get("status")
                if status != last and status:
                    self.changes += 1
                last = status

    def __enter__(self) -> StatusChanges:
        self.thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *_: object) -> None:
        self.watch.stop()


def test_a_running_canary_writes_its_status_once_per_decision_that_changed_it(
    world: World,
) -> None:
    # Given a model with real metrics and the operator
    world.model("writes")
    op = world.operator()
    before = status_patches(world.cluster)
    # When a canary with gates runs to promotion, watched
    with StatusChanges(world, "writes") as seen:
        world.apply(m.rollout("writes", world.ns))
        world.wait_phase("writes", "Succeeded", timeout=150)
        time.sleep(3)
    writes = status_patches(world.cluster) - before
    # Then every status PATCH changed the status (none was empty), one per changing decision,
    assert writes == seen.changes
    # (start; a check every 6s, the shadow's end, two weights and the promotion riding on them)
    assert seen.changes >= 6
    # and there were fewer writes than reconciles (most decide nothing new)
    assert writes < reconciles(op)


# ---------------------------------------------------------------------- shards


def test_two_shards_split_the_rollouts_and_a_standby_takes_over_its_shard(world: World) -> None:
    # Given kopf's peering objects for two shards, and three replicas: two for shard 0
    world.cluster.install_crds([ROOT / "crds" / "kopf-peering.yaml"])
    for shard in (0, 1):
        world.apply(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": f"mr-shard-{shard}", "namespace": world.ns},
            }
        )

    def replica(shard: int, who: str, priority: int) -> OperatorProcess:
        identity = f"shard{shard}-{who}"
        return world.operator(
            extra=[
                "--shards", "2", "--shard", str(shard),
                "--peering", "mr", "--peering-lifetime", "10s", "--priority", str(priority),
                "--identity", identity, "--field-manager", identity,
            ]
        )  # fmt: skip

    leader0 = replica(0, "a", 200)
    replica(0, "b", 100)
    replica(1, "a", 100)
    # When 20 rollouts are applied
    names = [f"r{i:02d}" for i in range(20)]
    for name in names:
        world.apply(m.http_route(name, world.ns, "v1"))
    world.apply(*(m.rollout(n, world.ns, strategy=QUICK, analysis=NO_GATES) for n in names))
    for name in names:
        world.wait_phase(name, "Succeeded", timeout=120)
    # Then each has exactly one shard label, the hash of its uid,
    objs = {n: with_managers(world, n) for n in names}
    shards = {n: shard_of(o["metadata"]["uid"], 2) for n, o in objs.items()}
    assert set(shards.values()) == {0, 1}, "both shards got rollouts"
    for name, obj in objs.items():
        labels = obj["metadata"].get("labels") or {}
        assert [k for k in labels if k == SHARD_LABEL] == [SHARD_LABEL]
        assert labels[SHARD_LABEL] == str(shards[name]), name
        # and only the acting replica of that shard wrote its status
        assert status_managers(obj) == {f"shard{shards[name]}-a"}, name
        assert obj["metadata"]["finalizers"] == [f"modelrollout.io/finalizer-{shards[name]}"]

    # When shard 0's acting replica is killed, and a shard-0 rollout gets a new candidate
    leader0.stop(kill=True)
    killed_at = time.monotonic()
    moved = next(n for n in names if shards[n] == 0)
    world.apply(m.rollout(moved, world.ns, candidate="v3", strategy=QUICK, analysis=NO_GATES))
    # Then shard 0's standby takes over within the peering lifetime and finishes it
    world.wait_status(
        moved,
        lambda s: s.get("phase") == "Succeeded" and s.get("stableVersion") == "v3",
        60,
        "v3 promoted by the standby",
    )
    taken_over_in = time.monotonic() - killed_at
    assert taken_over_in < 10 + 3 + 10, f"{taken_over_in:.0f}s: lifetime, pause and slack"
    assert "shard0-b" in status_managers(with_managers(world, moved))
