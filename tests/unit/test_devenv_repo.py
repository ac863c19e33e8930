"""The local environment finds the clone it works from by name, not by where it is installed.

``modelrollout_devenv`` reads ``hack/versions.env`` and ``crds/`` from the
clone. It used to guess the clone as ``parents[3]`` of its own file, which is
wrong as soon as the package is installed anywhere else; now the clone is
``$MODELROLLOUT_REPO`` or the nearest folder above the current directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelrollout_devenv import binaries, cli
from modelrollout_devenv.binaries import MissingBinary, RepoNotFound, find_binaries, repo_root
from modelrollout_devenv.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A folder that looks like a clone: it has ``hack/versions.env``."""
    (tmp_path / "clone" / "hack").mkdir(parents=True)
    (tmp_path / "clone" / "hack" / "versions.env").write_text("ETCD_VERSION=v3.6.0\n")
    (tmp_path / "clone" / "docs" / "deep").mkdir(parents=True)
    return tmp_path / "clone"


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELROLLOUT_REPO", "MODELROLLOUT_VERSIONS_ENV", "KUBEBUILDER_ASSETS"):
        monkeypatch.delenv(name, raising=False)


def test_the_clone_is_found_from_a_folder_inside_it(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(clone / "docs" / "deep")
    assert repo_root() == clone.resolve()
    assert binaries.read_versions() == {"ETCD_VERSION": "v3.6.0"}


def test_modelrollout_repo_wins_over_the_current_folder(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MODELROLLOUT_REPO", str(clone))
    assert repo_root() == clone.resolve()


def test_a_modelrollout_repo_that_is_no_clone_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELROLLOUT_REPO", str(tmp_path))
    with pytest.raises(RepoNotFound, match=r"MODELROLLOUT_REPO=.* is not a modelrollout clone"):
        repo_root()


def test_outside_a_clone_the_error_says_both_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RepoNotFound) as caught:
        repo_root()
    assert "Run from inside the clone" in str(caught.value)
    assert "MODELROLLOUT_REPO=" in str(caught.value)


def test_a_missing_binary_outside_a_clone_says_why_the_version_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingBinary) as caught:
        find_binaries(need={"etcd"})
    assert "version unknown (cannot find the modelrollout clone" in str(caught.value)


@pytest.mark.parametrize("command", ["up", "demo", "cluster"])
def test_the_dev_cli_keeps_its_commands(command: str) -> None:
    args = build_parser().parse_args([command, "--work-dir", "/tmp/x"])
    assert callable(args.func)
    assert args.work_dir == Path("/tmp/x")


@pytest.mark.parametrize("command", ["up", "demo"])
def test_up_and_demo_outside_a_clone_stop_before_starting_anything(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)

    def nothing_may_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("the environment was started outside a clone")

    monkeypatch.setattr(cli, "Environment", nothing_may_start)
    assert cli.main([command, "--work-dir", str(tmp_path / "w")]) == 2
    assert "cannot find the modelrollout clone" in capsys.readouterr().err


def test_the_dev_package_runs_as_a_program() -> None:
    path = os.pathsep.join(str(ROOT / folder) for folder in ("operator", "devenv"))
    result = subprocess.run(
        [sys.executable, "-m", "modelrollout_devenv", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("up", "demo", "cluster"):
        assert command in result.stdout
