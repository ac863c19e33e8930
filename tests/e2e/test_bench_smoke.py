"""The scale benchmark in small: 20 rollouts over 2 shards, a killed leader replaced.

``python -m tests.bench.bench_scale --quick`` as a test, so CI runs the
benchmark's code path; it asserts the invariants only (each rollout's status
written by its own shard's leader alone, none decided by two replicas, the
standby taking over), never a timing beyond the peering lifetime's bound.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.bench_scale import run

pytestmark = pytest.mark.e2e


def test_twenty_rollouts_over_two_shards_are_each_written_by_one_replica(tmp_path: Path) -> None:
    # Given 20 finished rollouts, 2 shards with a leader and a standby each
    r = run(20, 2, lifetime=6, window=2.0, moved=2, work=tmp_path)
    # Then every rollout was decided, its status written by its own shard's leader alone
    assert sum(r["rollouts_per_shard"].values()) == 20
    assert r["status_written_by_other_than_own_leader"] == {}
    assert r["rollouts_decided_by_two_replicas"] == 0
    decided = {k: v["rollouts_decided"] for k, v in r["replicas"].items()}
    assert decided["shard0-a"] + decided["shard1-a"] == 20
    assert decided["shard0-b"] == decided["shard1-b"] == 0
    # and nothing was written while idle
    assert r["status_patches_idle_window"] == 0
    # When shard 0's leader was killed, its standby promoted the new candidates
    takeover = r["takeover"]
    assert takeover["all_promoted_after_kill_s"] is not None
    assert takeover["status_managers_of_moved"] == ["shard0-a+shard0-b"]
    assert takeover["standby_decided_only_shard0"]
    # within the lifetime, the 3 s pause and slack
    assert takeover["all_promoted_after_kill_s"] < 6 + 3 + 10
