"""Every example manifest is accepted by the real API server, with the real upstream CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from .world import World

pytestmark = pytest.mark.e2e

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_example_applies_to_the_real_api_server(world: World, path: Path) -> None:
    result = world.cluster.kubectl("apply", "-n", world.ns, "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    assert "modelrollout.modelrollout.io/" in result.stdout
