"""A small process supervisor for the local control plane.

The local environment is a handful of long-running binaries (etcd,
kube-apiserver, ...). What a test suite needs from a supervisor is narrow but
strict:

- **nothing is left running**, even when a test fails, the fixture raises, or
  the interpreter exits without running ``finally`` blocks: every process is
  registered for an ``atexit`` clean-up, :class:`Supervisor` is a context
  manager, and on Linux each child gets ``PR_SET_PDEATHSIG`` so it dies with
  the Python process even after ``kill -9``;
- **a failed start says why**: readiness errors carry the tail of the
  process's log, because "timed out waiting for kube-apiserver" alone sends
  you digging for a log file you may not know exists;
- **logs stay in the work dir** (``<work_dir>/logs/<name>.log``), where a
  failed CI run can keep them.

Each child runs in its own session (process group) so that stopping it also
stops anything it spawned, and so that a Ctrl-C in the terminal reaches the
Python process first, which then stops the children in order.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "ManagedProcess",
    "ProcessExited",
    "ReadinessError",
    "Supervisor",
    "free_port",
    "http_probe",
    "loopback_opener",
    "stop_all",
    "tcp_probe",
    "wait_until",
]

#: A readiness probe: returns True once the thing it probes is ready. It may
#: raise; the exception is remembered and shown if the wait times out.
Probe = Callable[[], bool]

_LOCALHOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ReadinessError(RuntimeError):
    """A process did not become ready in time (the message has its log tail)."""


class ProcessExited(ReadinessError):
    """A process exited while we waited for it to become ready."""


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = _LOCALHOST) -> int:
    """A TCP port on ``host`` that is free right now.

    The kernel picks it (bind to port 0); ports this process already handed
    out are never returned twice, so several servers started in a row cannot
    be given the same port before the first of them binds it. (Another process
    could still take it in between; on a test machine that is rare enough.)
    """
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port found on {host}")


# -------------------------------------------------------------------------- probes


def tcp_probe(port: int, host: str = _LOCALHOST) -> Probe:
    """Ready once something accepts TCP connections on ``host:port``."""

    def probe() -> bool:
        with socket.create_connection((host, port), timeout=1):
            return True

    return probe


def loopback_opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """A urllib opener that ignores ``*_proxy`` variables.

    Everything the local environment talks to is on 127.0.0.1; a developer's
    ``https_proxy`` must not send those requests to a proxy (urllib, unlike
    Go's HTTP client, does not exempt loopback addresses by itself).
    """
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def http_probe(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    insecure: bool = False,
    expect: Callable[[int, bytes], bool] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Probe:
    """Ready once ``GET url`` answers 2xx (and ``expect(status, body)`` if given).

    ``insecure=True`` skips TLS verification: right for health endpoints of
    components that serve a self-signed certificate made at start-up (the
    controller manager and scheduler), where the probe only asks "are you up".
    """
    context = ssl_context
    if context is None and insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    opener = loopback_opener(context)

    def probe() -> bool:
        request = urllib.request.Request(url, headers=dict(headers or {}))
        try:
            with opener.open(request, timeout=2) as response:
                status: int = response.status
                body: bytes = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            raise RuntimeError(f"HTTP {exc.code} from {url}: {body[:300]!r}") from None
        return 200 <= status < 300 and (expect is None or expect(status, body))

    return probe


# ------------------------------------------------------------------------ processes


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL the child when its parent thread dies.

    SIGKILL, not SIGTERM: with the parent gone nobody escalates, and a
    kube-apiserver told to terminate gracefully while its etcd is going away
    too was seen to linger for good.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One supervised child process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Start the process (again, if it was stopped); output is appended to the log."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._log.write(f"\n==== {stamp} starting {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is
        # only safe from the main thread; elsewhere atexit has to do.
        on_main_thread = threading.current_thread() is threading.main_thread()
        use_pdeathsig = sys.platform == "linux" and on_main_thread
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig if use_pdeathsig else None,
        )
        _live[self] = None
        return self

    def stop(self, timeout: float = 10.0, *, kill: bool = False) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``timeout`` seconds.

        ``kill=True`` skips straight to SIGKILL (a crash, as a test may want).
        Returns the exit code, or None if the process was never started.
        """
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                popen.wait(timeout=10)
            # Kill anything the child left behind in its process group (the
            # group id cannot be reused while such members exist).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.pop(self, None)
        return popen.returncode

    def _signal(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group gone, pid reused
            self._popen.send_signal(sig)

    # -- state -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log (bounded read, the log may be large)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                data = log.read()
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def wait_ready(self, probe: Probe, timeout: float, what: str = "ready") -> None:
        """Wait until ``probe()`` is true; fail early if the process exits."""
        wait_until(probe, timeout, what=f"{self.name} {what}", process=self)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


def wait_until(
    probe: Probe,
    timeout: float,
    *,
    what: str,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``probe`` until it returns True, up to ``timeout`` seconds.

    Raises :class:`ProcessExited` as soon as ``process`` dies (no point waiting
    out the timeout), or :class:`ReadinessError` on timeout; both messages carry
    the probe's last error and the tail of the process's log.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if probe():
                return
            last_error = None
        except Exception as exc:
            last_error = exc
        if process is not None and process.returncode is not None and not process.running:
            raise ProcessExited(
                _explain(
                    f"{process.name} exited with code {process.returncode} "
                    f"while waiting for {what}",
                    last_error,
                    process,
                )
            )
        if time.monotonic() >= deadline:
            raise ReadinessError(
                _explain(f"timed out after {timeout:.0f}s waiting for {what}", last_error, process)
            )
        time.sleep(interval)


def _explain(head: str, error: BaseException | None, process: ManagedProcess | None) -> str:
    parts = [head]
    if error is not None:
        parts.append(f"last probe error: {type(error).__name__}: {error}")
    if process is not None:
        parts.append(f"log: {process.log_path}\n---- last lines ----\n{process.log_tail()}")
    return "\n".join(parts)


# ------------------------------------------------------------------- registration

# Strong references (not a WeakSet): a process whose handle the caller dropped
# must still be stopped at exit. A dict keeps start order.
_live: dict[ManagedProcess, None] = {}


def stop_all(timeout: float = 5.0) -> None:
    """Stop every process still running in this interpreter (newest first)."""
    for process in reversed(list(_live)):
        with contextlib.suppress(Exception):
            process.stop(timeout=timeout)


atexit.register(stop_all)


class Supervisor:
    """Starts processes with logs under ``<work_dir>/logs`` and stops them all on exit.

    Processes are stopped in reverse start order, so dependants (the API
    server) go before what they depend on (etcd) and do not spend their last
    seconds logging connection errors.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.logs_dir = work_dir / "logs"
        self._processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` as ``name``; its output goes to ``logs/<name>.log``."""
        if any(p.name == name and p.running for p in self._processes):
            raise RuntimeError(f"a process named {name!r} is already running")
        process = ManagedProcess(
            name, [os.fspath(a) for a in argv], self.logs_dir / f"{name}.log", env=env, cwd=cwd
        )
        self._processes = [p for p in self._processes if p.name != name]
        self._processes.append(process)
        return process.start()

    def get(self, name: str) -> ManagedProcess:
        for process in self._processes:
            if process.name == name:
                return process
        raise KeyError(name)

    @property
    def processes(self) -> list[ManagedProcess]:
        return list(self._processes)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every process, newest first; never raises."""
        for process in reversed(self._processes):
            with contextlib.suppress(Exception):
                process.stop(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
