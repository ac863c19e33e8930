"""The Argo CD health check (docs/argocd-health.lua), run by a real Lua on real statuses.

``lua5.4`` runs ``tests/lua/run_health.lua``, which loads the check in a
sandbox like Argo CD's (base and table libraries only) on each status sample
of ``tests/fixtures/status-samples``: whole ModelRollouts whose status the
engine wrote after a real sequence of ticks (``generate.py`` there). A missing
``lua5.4`` fails the test (``make install`` installs it), never skips it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from modelrollout.api.status import ModelRolloutStatus, Phase

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd-health.lua"
RUNNER = ROOT / "tests" / "lua" / "run_health.lua"
SAMPLES = ROOT / "tests" / "fixtures" / "status-samples"
HEALTH = {"Healthy", "Progressing", "Suspended", "Degraded"}


def lua() -> str:
    found = shutil.which("lua5.4")
    if found is None:
        pytest.fail(
            "lua5.4 not found: install it with `make install` (hack/install-system-deps.sh) "
            "or `apt-get install lua5.4`",
            pytrace=False,
        )
    return found


def run_health(*paths: Path, script: Path = SCRIPT) -> list[dict[str, str]]:
    result = subprocess.run(
        [lua(), str(RUNNER), str(script), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(paths), result.stderr
    return lines


def sample_files() -> list[Path]:
    files = sorted(SAMPLES.glob("*.json"))
    assert files, f"no status samples in {SAMPLES}"
    return files


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_every_sample_gets_the_expected_health() -> None:
    files = sample_files()
    results = run_health(*files)
    wrong = []
    for path, result in zip(files, results, strict=True):
        assert "error" not in result, f"{path.name}: {result.get('error')}"
        expect = load(path)["expect"]
        if result["status"] != expect:
            wrong.append(f"{path.name}: {result['status']} ({result['message']}), want {expect}")
        assert result["message"], f"{path.name}: an empty message tells the user nothing"
    assert not wrong, "\n".join(wrong)


def test_the_samples_cover_every_health_and_every_phase() -> None:
    samples = [load(p) for p in sample_files()]
    assert {s["expect"] for s in samples} == HEALTH
    phases = {(s["object"].get("status") or {}).get("phase") for s in samples}
    assert {p.value for p in Phase} <= phases, "a phase without a sample"
    assert None in phases, "a rollout the operator has not seen yet"


def test_phase_maps_to_health() -> None:
    by_phase = {
        "Succeeded": "Healthy",
        "Paused": "Suspended",
        "RolledBack": "Degraded",
        "Failed": "Degraded",
        "Pending": "Progressing",
        "Shadowing": "Progressing",
        "Progressing": "Progressing",
        "Promoting": "Progressing",
    }
    for path, result in zip(sample_files(), run_health(*sample_files()), strict=True):
        obj = load(path)["object"]
        status = obj.get("status") or {}
        stale = status.get("observedGeneration", 0) < obj["metadata"]["generation"]
        if status.get("phase") and not stale:
            assert result["status"] == by_phase[status["phase"]], path.name


def test_an_unseen_generation_is_progressing_whatever_the_phase(tmp_path: Path) -> None:
    files = []
    for path in sample_files():
        obj = load(path)["object"]
        if not obj.get("status"):
            continue
        obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 4
        out = tmp_path / path.name
        out.write_text(json.dumps(obj))
        files.append(out)
    for out, result in zip(files, run_health(*files), strict=True):
        generation = json.loads(out.read_text())["metadata"]["generation"]
        assert result == {
            "file": str(out),
            "status": "Progressing",
            "message": f"Waiting for the operator to see generation {generation}",
        }


def test_messages_say_what_to_do() -> None:
    results = {Path(r["file"]).stem: r for r in run_health(*sample_files())}
    assert "awaiting approval: canary:1" in results["paused-awaiting-approval"]["message"]
    assert "route unavailable" in results["pending-route-unavailable"]["message"]
    assert "p99-latency" in results["rolled-back"]["message"]
    assert "invalid spec" in results["failed-invalid-spec"]["message"]
    assert "(v2 at 10%)" in results["progressing-canary"]["message"]


def test_the_samples_are_statuses_the_operator_writes() -> None:
    for path in sample_files():
        status = load(path)["object"].get("status")
        if status is None:
            continue
        parsed = ModelRolloutStatus.model_validate(status)
        assert parsed.observed_generation is not None, path.name
        conditions = {c.type: c.status for c in parsed.conditions}
        # The kstatus conditions Flux reads agree with the health Argo CD reads.
        assert conditions["Ready"] == ("True" if parsed.phase == Phase.SUCCEEDED else "False")
        stalled = parsed.phase in (Phase.ROLLED_BACK, Phase.FAILED)
        assert conditions["Stalled"] == ("True" if stalled else "False"), path.name


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("status_samples", SAMPLES / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_samples_still_match_what_the_engine_writes() -> None:
    """When the engine changes a phase, regenerate the samples (see generate.py)."""
    generated = _generator().samples()
    on_disk = {p.stem: load(p) for p in sample_files()}
    assert set(generated) == set(on_disk)
    for name, (obj, expect) in generated.items():
        assert on_disk[name]["expect"] == expect, name
        want = (obj.get("status") or {}).get("phase")
        have = (on_disk[name]["object"].get("status") or {}).get("phase")
        assert have == want, f"{name}: the engine now writes {want}; regenerate the samples"


# ---------------------------------------------------------------- Argo CD's sandbox


def test_the_script_uses_only_what_argo_cd_offers(tmp_path: Path) -> None:
    """Argo CD opens neither the string nor the math library for custom checks."""
    sample = SAMPLES / "progressing-canary.json"
    for forbidden in ('string.format("%d", 1)', "math.floor(1.5)", '("x"):upper()', "io.stdout"):
        script = tmp_path / "uses.lua"
        script.write_text(f"local _ = {forbidden}\nreturn {{status = 'Healthy', message = ''}}\n")
        (result,) = run_health(sample, script=script)
        assert "error" in result, f"the sandbox let `{forbidden}` through"
    text = SCRIPT.read_text()
    for forbidden in ("string.", "math.", "io.", ":format(", ":sub(", ":find(", "goto "):
        assert forbidden not in text, f"docs/argocd-health.lua uses {forbidden!r}"


def test_a_broken_script_is_reported_not_hidden(tmp_path: Path) -> None:
    script = tmp_path / "broken.lua"
    script.write_text("return obj.status.nothing.here\n")
    (result,) = run_health(SAMPLES / "new-no-status.json", script=script)
    assert "error" in result


def test_the_json_decoder_reads_what_kubectl_prints(tmp_path: Path) -> None:
    """Unicode escapes, nulls, nested arrays, exponents: the decoder is ours, so test it."""
    obj = {
        "metadata": {"generation": 3, "name": "caf\u00e9 \u2603 \U0001f680"},
        "status": {
            "phase": "Paused",
            "observedGeneration": 3,
            "message": 'a "quoted"\tmessage\n\\ with escapes',
            "awaitingApproval": None,
            "weights": {"stable": 1e2, "candidate": 0},
            "conditions": [[], {"type": "Ready", "status": "False", "message": ""}],
        },
    }
    path = tmp_path / "escapes.json"
    path.write_text(json.dumps(obj, ensure_ascii=True))
    (result,) = run_health(path)
    assert result["status"] == "Suspended"
    assert result["message"] == 'Paused: a "quoted"\tmessage\n\\ with escapes'
    bad = tmp_path / "bad.json"
    bad.write_text('{"status": {"phase": "Paused",}}')
    (result,) = run_health(bad)
    assert "JSON" in result["error"]


# ------------------------------------------------------------------- the docs' copies


def test_the_argocd_cm_example_holds_the_script_verbatim() -> None:

    cm = yaml.safe_load((ROOT / "examples" / "gitops" / "argocd-cm.yaml").read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    key = "resource.customizations.health.modelrollout.io_ModelRollout"
    assert cm["data"][key] == SCRIPT.read_text(), "copy docs/argocd-health.lua into the example"


def test_the_gitops_examples_name_the_right_kind_and_fields() -> None:

    docs = ROOT / "docs" / "gitops.md"
    assert "resource.customizations.health.modelrollout.io_ModelRollout" in docs.read_text()
    flux = list(yaml.safe_load_all((ROOT / "examples/gitops/flux-kustomization.yaml").read_text()))
    (kustomization,) = [d for d in flux if d["kind"] == "Kustomization"]
    (expr,) = kustomization["spec"]["healthCheckExprs"]
    assert (expr["apiVersion"], expr["kind"]) == ("modelrollout.io/v1alpha1", "ModelRollout")
    argo = list(yaml.safe_load_all((ROOT / "examples/gitops/argocd-application.yaml").read_text()))
    ignored = {
        (i["group"], i["kind"]) for a in argo for i in a["spec"].get("ignoreDifferences", [])
    }
    assert ("gateway.networking.k8s.io", "HTTPRoute") in ignored
    assert ("networking.istio.io", "VirtualService") in ignored
