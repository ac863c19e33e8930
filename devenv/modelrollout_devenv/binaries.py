"""Find the binaries of the local control plane.

The local environment runs the real thing (etcd, kube-apiserver, ...), never a
mock, so the first question of every test run is *where are the binaries*. The
answer is looked for in this order, per binary:

1. ``$KUBEBUILDER_ASSETS/<name>``: the envtest convention, so a developer who
   already has ``setup-envtest`` assets (or a folder of their own) can point at
   it and skip the half-hour build;
2. the build cache of ``hack/build-binaries.sh``:
   ``${MODELROLLOUT_CACHE:-~/.cache/modelrollout}/bin/<name>-<version>/<name>``,
   the version read from ``hack/versions.env`` (helm's folder also carries its
   build tag, ``helm-<version>-<HELM_BUILD>``); looking up *the pinned version*
   (not "any etcd") is what makes a version bump in ``versions.env`` take effect
   instead of silently testing against the old build;
3. ``$PATH``, for prometheus, kubectl and helm only: these are ordinary tools
   a developer may have from their distribution, while a stray etcd or
   kube-apiserver on ``$PATH`` would most likely be the wrong version.

A missing binary raises :class:`MissingBinary` naming the part, every place that
was tried and how to get it, so a failed test says what to do rather than
"FileNotFoundError".
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

__all__ = [
    "ALL_PARTS",
    "Binaries",
    "MissingBinary",
    "RepoNotFound",
    "cache_root",
    "crds_dir",
    "find_binaries",
    "read_versions",
    "repo_root",
    "versions_file",
]

#: Every part of the local environment, in start-up order.
ALL_PARTS: Final = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "prometheus",
    "kserve-manager",
    "flagger",
)

#: Which line of ``hack/versions.env`` pins each part (prometheus is Debian's).
_VERSION_KEY: Final[Mapping[str, str]] = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "kserve-manager": "KSERVE_VERSION",
    "flagger": "FLAGGER_VERSION",
}

#: Which line of ``hack/versions.env`` names the build recipe of a part, when its
#: build flags matter to the tests: the cache folder is ``<name>-<version>-<tag>``,
#: so a binary built with older flags is not picked up (the helm build sets the
#: Kubernetes version helm renders for; without it ``helm template`` assumes v1.20).
_BUILD_KEY: Final[Mapping[str, str]] = {"helm": "HELM_BUILD"}

#: Parts that may come from ``$PATH`` (see the module docstring for why only these).
_FROM_PATH: Final = frozenset({"prometheus", "kubectl", "helm"})


class MissingBinary(RuntimeError):
    """A binary the local environment needs was not found.

    The message names the part, every path tried and how to get it.
    """

    def __init__(self, name: str, tried: Iterable[str], hint: str) -> None:
        self.name = name
        self.tried = tuple(tried)
        self.hint = hint
        where = "\n".join(f"  - {t}" for t in self.tried) or "  (nowhere)"
        super().__init__(f"{name} not found. Looked in:\n{where}\n{hint}")


class RepoNotFound(FileNotFoundError):
    """The clone the local environment works from could not be found.

    A ``FileNotFoundError`` so that callers which already treat an unreadable
    ``versions.env`` as "version unknown" keep doing so.
    """


#: The file that marks the root of a clone (and pins the versions).
_MARKER: Final = Path("hack") / "versions.env"


def repo_root(start: Path | None = None) -> Path:
    """The clone of the modelrollout repository the local environment works from.

    The local environment needs files that are not Python and are not shipped
    with any wheel: ``hack/versions.env`` (the pinned versions, also read by
    ``hack/build-binaries.sh``, so it stays the one source of truth) and
    ``crds/``. Where this package happens to be installed says nothing about
    where the clone is, so the clone is named, not guessed from ``__file__``:

    1. ``$MODELROLLOUT_REPO``, when set (it must hold ``hack/versions.env``);
    2. else the nearest folder at or above ``start`` (default: the current
       directory) that holds ``hack/versions.env``.

    Raises :class:`RepoNotFound` saying both ways out.
    """
    override = os.environ.get("MODELROLLOUT_REPO")
    if override:
        root = Path(override).expanduser().resolve()
        if (root / _MARKER).is_file():
            return root
        raise RepoNotFound(
            f"MODELROLLOUT_REPO={override} is not a modelrollout clone: {root / _MARKER} "
            "does not exist."
        )
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / _MARKER).is_file():
            return folder
    raise RepoNotFound(
        f"cannot find the modelrollout clone: no {_MARKER} in {here} or any folder above it. "
        "Run from inside the clone, or set MODELROLLOUT_REPO=/path/to/the/clone."
    )


def versions_file() -> Path:
    """``hack/versions.env`` of the clone; ``MODELROLLOUT_VERSIONS_ENV`` overrides it.

    Raises :class:`RepoNotFound` when neither the override nor a clone is found.
    """
    override = os.environ.get("MODELROLLOUT_VERSIONS_ENV")
    return Path(override) if override else repo_root() / _MARKER


def read_versions(path: Path | None = None) -> dict[str, str]:
    """Parse the ``KEY=value`` lines of ``versions.env`` (comments and blanks skipped).

    The file is also ``source``d by bash, so only the plain ``KEY=value`` form is
    supported; quotes around the value are stripped.
    """
    path = path or versions_file()
    versions: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def cache_root() -> Path:
    """The build cache: ``$MODELROLLOUT_CACHE`` or ``~/.cache/modelrollout``."""
    override = os.environ.get("MODELROLLOUT_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "modelrollout"


def crds_dir() -> Path:
    """Where ``hack/build-binaries.sh crds`` puts the upstream CRDs."""
    return cache_root() / "crds"


def _hint(name: str) -> str:
    if name == "kserve-manager":
        return (
            "Build it with `hack/build-binaries.sh kserve` (KServe's controller from Go "
            "modules; needs Go 1.26+), or set KUBEBUILDER_ASSETS to a folder holding it."
        )
    if name == "flagger":
        return (
            "Build it with `hack/build-binaries.sh flagger` (Flagger from Go modules, only "
            "for `make bench-flagger`), or set KUBEBUILDER_ASSETS to a folder holding it."
        )
    if name == "prometheus":
        return (
            "Install it with `apt-get install prometheus` (Debian/Ubuntu), or put a "
            "prometheus binary on PATH or in $KUBEBUILDER_ASSETS."
        )
    return (
        "Build it with `make binaries` (runs hack/build-binaries.sh; needs Go 1.26+ "
        "and takes ~30 min cold on 2 cores), or set KUBEBUILDER_ASSETS to a folder "
        f"holding {name} (envtest convention)."
    )


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _locate(name: str, versions: Mapping[str, str] | None, versions_error: str) -> Path:
    tried: list[str] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidate = Path(assets) / name
        if _executable(candidate):
            return candidate
        tried.append(f"$KUBEBUILDER_ASSETS/{name} = {candidate}")
    else:
        tried.append("$KUBEBUILDER_ASSETS (not set)")

    key = _VERSION_KEY.get(name)
    if key is not None:
        version = versions.get(key) if versions is not None else None
        if version:
            tag = versions.get(_BUILD_KEY.get(name, ""), "") if versions is not None else ""
            folder = f"{name}-{version}-{tag}" if tag else f"{name}-{version}"
            candidate = cache_root() / "bin" / folder / name
            if _executable(candidate):
                return candidate
            tried.append(f"build cache: {candidate}")
        elif versions is None:
            tried.append(f"build cache: version unknown ({versions_error})")
        else:
            tried.append(f"build cache: {key} missing from {versions_file()}")

    if name in _FROM_PATH:
        found = shutil.which(name)
        if found:
            return Path(found)
        tried.append("$PATH")

    raise MissingBinary(name, tried, _hint(name))


@dataclass(frozen=True)
class Binaries:
    """Paths of the binaries that were asked for.

    Reading a part that was not asked for raises :class:`MissingBinary` too, so a
    caller that forgot to list a part in ``need=`` gets told which one.
    """

    paths: Mapping[str, Path]
    versions: Mapping[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """The path of ``name``; raises :class:`MissingBinary` if it was not resolved."""
        try:
            return self.paths[name]
        except KeyError:
            raise MissingBinary(
                name,
                [],
                f"{name} was not in the `need=` set given to find_binaries().",
            ) from None

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kube_scheduler(self) -> Path:
        return self.path("kube-scheduler")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def kwok(self) -> Path:
        return self.path("kwok")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    @property
    def prometheus(self) -> Path:
        return self.path("prometheus")

    @property
    def kserve_manager(self) -> Path:
        return self.path("kserve-manager")

    @property
    def flagger(self) -> Path:
        return self.path("flagger")


def find_binaries(need: Iterable[str] | None = None) -> Binaries:
    """Resolve the binaries in ``need`` (default: all of :data:`ALL_PARTS`).

    Every requested part is looked up before failing: the first missing one (in
    :data:`ALL_PARTS` order) is raised and the others are listed in its message.
    Asking for only what a caller uses keeps the error about the part that matters.
    """
    wanted = set(ALL_PARTS if need is None else need)
    unknown = wanted.difference(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown binaries {sorted(unknown)}; known: {', '.join(ALL_PARTS)}")

    versions: dict[str, str] | None
    versions_error = ""
    try:
        source = versions_file()
        versions = read_versions(source)
    except RepoNotFound as exc:
        versions = None
        versions_error = str(exc)
    except OSError as exc:
        versions = None
        versions_error = f"cannot read {source}: {exc.strerror or exc}"

    paths: dict[str, Path] = {}
    missing: list[MissingBinary] = []
    for name in ALL_PARTS:
        if name in wanted:
            try:
                paths[name] = _locate(name, versions, versions_error)
            except MissingBinary as exc:
                missing.append(exc)
    if missing:
        first = missing[0]
        if len(missing) > 1:
            others = ", ".join(m.name for m in missing[1:])
            raise MissingBinary(first.name, first.tried, f"{first.hint}\nAlso missing: {others}.")
        raise first
    return Binaries(paths=MappingProxyType(paths), versions=MappingProxyType(versions or {}))
