"""Benchmarks of the pure engine and the CRD-sized status it returns.

Run with ``make bench``; the numbers go to docs/benchmarks.md by hand, with
the machine they came from. Not a test: timing belongs here, not in asserts.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from modelrollout.api.status import ModelRolloutStatus
from modelrollout.engine import Observations, decide, plan
from tests.unit.engine_harness import FAIL, PASS, T0, Sim, make_spec


def bench(name: str, fn: Callable[[], object], n: int = 2000) -> None:
    for _ in range(50):
        fn()
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t) / n * 1e6)
    print(f"{name:<58} {statistics.median(samples):8.1f} µs/op  (min {min(samples):.1f})")


def main() -> None:
    spec = make_spec(strategy={"canary": {"steps": [{"setWeight": 5}, {"pause": {}}]}})
    sim = Sim(spec)
    sim.tick()
    sim.run(3000, every=30)  # a status with a full ledger and history
    full = sim.status
    quiet = Observations(analysis=None, traffic=sim.route)
    check = Observations(analysis=PASS, traffic=sim.route)
    fail = Observations(analysis=FAIL, traffic=sim.route)
    now = T0 + timedelta(hours=2)
    print(f"status size with full ledger: {len(json.dumps(full.dump()))} bytes")
    bench("plan() on a full status", lambda: plan(spec, full, now))
    bench("decide() with nothing new (most ticks)", lambda: decide(spec, full, quiet, now))
    bench("decide() with a passing check", lambda: decide(spec, full, check, now))
    bench("decide() with a failing check", lambda: decide(spec, full, fail, now))
    raw = full.dump()
    bench("parse a full status (ModelRolloutStatus.model_validate)",
          lambda: ModelRolloutStatus.model_validate(raw))  # fmt: skip

    def whole_rollout() -> None:
        s = Sim(make_spec())
        s.tick()
        s.run(300, every=10)

    bench("a whole 4-step canary, 31 ticks, driven tick by tick", whole_rollout, n=20)


if __name__ == "__main__":
    main()
