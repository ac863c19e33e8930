"""The wheel users install holds the product and nothing else.

The local environment (launchers, PKI, kwok, Prometheus, simulators) and its
``modelrollout-dev`` CLI are the separate ``modelrollout-devenv`` distribution
in ``devenv/``; matplotlib is the ``report`` extra. These tests build the real
wheel, offline, from a copy of the sources, and read what is inside.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from modelrollout.cli import report
from modelrollout.cli.kube import EXIT_FAILED
from modelrollout.cli.main import DEV_MOVED, build_parser, main

from .fresh import fresh_python

ROOT = Path(__file__).resolve().parents[2]

#: Folders of the local environment: none may appear anywhere in the product's wheel.
DEV_FOLDERS = frozenset({"modelrollout_devenv", "devenv", "sim"})
#: Its modules (read from devenv/, so a new launcher is covered), and the old ``cli/dev.py``.
DEV_MODULES = frozenset(
    {p.stem for p in (ROOT / "devenv" / "modelrollout_devenv").rglob("*.py")} | {"dev"}
) - {"__init__", "__main__"}


def _wheel_tools_missing() -> str | None:
    """Why the wheel cannot be built offline here, or None when it can."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):
        return None  # bdist_wheel is part of setuptools itself
    try:
        import wheel  # noqa: F401
    except ImportError:
        return f"setuptools {setuptools.__version__} needs the `wheel` package (make install)"
    return None


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The product's wheel, built from a copy so the clone gets no build/ or egg-info."""
    reason = _wheel_tools_missing()
    if reason is not None:
        pytest.fail(f"cannot build a wheel offline: {reason}")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")
    # devenv/ is copied too: a find-packages that reached for it would show up below.
    for folder in ("operator", "devenv"):
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("modelrollout-*.whl")
    return zipfile.ZipFile(whl)


def test_the_wheel_holds_only_the_modelrollout_package(built_wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in built_wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"modelrollout"}


def test_the_wheel_holds_no_launcher_or_simulator_module(built_wheel: zipfile.ZipFile) -> None:
    files = [Path(n) for n in built_wheel.namelist() if not n.split("/")[0].endswith(".dist-info")]
    folders = {part for f in files for part in f.parent.parts}
    modules = {f.stem for f in files if f.suffix == ".py"}
    assert {"cluster", "model_server"} <= DEV_MODULES  # the list is not empty
    assert folders.isdisjoint(DEV_FOLDERS), sorted(folders & DEV_FOLDERS)
    assert modules.isdisjoint(DEV_MODULES), sorted(modules & DEV_MODULES)
    assert Path("modelrollout/operator/handlers.py") in files  # the product is there


def test_the_dashboards_page_ships_as_package_data(built_wheel: zipfile.ZipFile) -> None:
    names = set(built_wheel.namelist())
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css"):
        assert f"modelrollout/cli/static/{asset}" in names


def test_matplotlib_is_only_the_report_extra(built_wheel: zipfile.ZipFile) -> None:
    (meta_name,) = [n for n in built_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.parser.Parser().parsestr(built_wheel.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    hard = [r for r in requires if "extra ==" not in r]
    assert "kopf" in " ".join(hard)  # the parse found the real requirements
    assert not [r for r in hard if r.lower().startswith("matplotlib")], hard
    assert any(r.startswith("matplotlib") and 'extra == "report"' in r for r in requires)
    assert "report" in (meta.get_all("Provides-Extra") or [])


def test_no_console_script_of_the_wheel_is_a_dev_tool(built_wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in built_wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    scripts = built_wheel.read(name).decode()
    assert "modelrollout-dev" not in scripts
    assert "devenv" not in scripts


# ------------------------------------------------------------------ what users see


def test_report_without_matplotlib_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails

    def no_cluster(*args: object) -> None:
        raise AssertionError("report must stop before it connects")

    monkeypatch.setattr("modelrollout.cli.kube.Kube.connect", no_cluster)
    code = main(["report", "fraud", "-o", "out.png"])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert err == f"error: {report.MISSING_MATPLOTLIB}\n"
    assert "pip install 'modelrollout[report]'" in err


def test_report_goes_on_when_matplotlib_is_installed() -> None:
    # `make install` installs the report extra: matplotlib is there in every test run.
    report.require_matplotlib()  # does not raise


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["dev", "up"], id="dev-up"),
        pytest.param(["dev", "demo", "--timeout", "10"], id="dev-demo-with-flags"),
        pytest.param(["dev"], id="dev-alone"),
    ],
)
def test_modelrollout_dev_points_at_modelrollout_dev(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {DEV_MOVED}\n"
    assert "modelrollout-dev up" in err
    assert "make install" in err


def test_dev_is_not_offered_in_the_help() -> None:
    assert " dev " not in build_parser().format_help()


# ------------------------------------------------------------------ what a replica holds


def test_the_operator_starts_without_scipy_stats() -> None:
    # scipy.stats holds about 45 MiB resident in every replica; only the KS and
    # Mann-Whitney tests need it, and they import it when they first run.
    probe = "import sys, modelrollout.operator.handlers; print('scipy.stats' in sys.modules)"
    assert fresh_python(probe).strip() == "False"
