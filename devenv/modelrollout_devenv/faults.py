"""Fault injection between the operator and what it talks to, on loopback.

Two small proxies, each in a background thread, for end-to-end tests that must
show the operator survives a misbehaving world:

- :class:`ApiFaultProxy` sits between a client and the local kube-apiserver. It
  terminates TLS with the cluster's own serving certificate (so a kubeconfig
  with the cluster CA trusts it), forwards each request on a fresh TLS
  connection as the admin, and injects faults by a fixed schedule: a 409
  Conflict on every second write, a 500 on every Nth other request, a stall
  before every Mth, and it cuts watches after a while. Fixed schedules, not
  random ones, so a failing run can be replayed.
- :class:`PrometheusFaultProxy` sits in front of a real Prometheus and, by
  :attr:`PrometheusFaultProxy.mode`, answers slowly, with stale samples (their
  timestamps set minutes back, as a stuck cache would), or as a partial answer
  (a ``warnings`` entry, as Prometheus adds when a store did not answer).

Both count what they did (:attr:`counts`), for the figures a test reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from modelrollout_devenv.cluster import LocalCluster

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiFaultProxy:
    """An HTTPS proxy to the local API server that injects API errors by a schedule.

    ``conflict_every`` writes answer 409 (every second write by default), every
    ``error_every``-th other request answers 500, every ``stall_every``-th request
    waits ``stall_seconds`` before it is forwarded, and a watch is cut after
    ``watch_seconds``. Watches are otherwise passed through untouched: a client
    that cannot watch learns nothing, and kopf's re-listing is what is under test.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        conflict_every: int = 2,
        error_every: int = 5,
        stall_every: int = 13,
        stall_seconds: float = 10.0,
        watch_seconds: float = 20.0,
    ) -> None:
        self.cluster = cluster
        self.conflict_every = conflict_every
        self.error_every = error_every
        self.stall_every = stall_every
        self.stall_seconds = stall_seconds
        self.watch_seconds = watch_seconds
        self.counts: Counter[str] = Counter()
        self.enabled = True
        """False: forward everything untouched (the faults stop, the proxy stays)."""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._writes = 0
        self._others = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ApiFaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._server_tls())
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="api-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the API fault proxy did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def kubeconfig(self, path: Path) -> Path:
        """A copy of the cluster's kubeconfig whose server is this proxy."""
        config: dict[str, Any] = yaml.safe_load(self.cluster.kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)
        return path

    # -- TLS ----------------------------------------------------------------------

    def _server_tls(self) -> ssl.SSLContext:
        pki = self.cluster.pki
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _client_tls(self) -> ssl.SSLContext:
        pki = self.cluster.pki
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return context

    # -- the schedule ---------------------------------------------------------------

    def _fault(self, method: str, target: str) -> str | None:
        if not self.enabled or "watch=" in target:
            return None
        if method in _WRITES:
            self._writes += 1
            if self.conflict_every and self._writes % self.conflict_every == 0:
                return "conflict"
            return None
        self._others += 1
        if self.error_every and self._others % self.error_every == 0:
            return "error"
        if self.stall_every and self._others % self.stall_every == 0:
            return "stall"
        return None

    # -- one connection -------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [h for h in lines[1:] if h]
                length = 0
                for h in headers:
                    name, _, value = h.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                fault = self._fault(method, target)
                if fault == "stall":
                    self.counts["stall"] += 1
                    await asyncio.sleep(self.stall_seconds)
                elif fault is not None:
                    self.counts[fault] += 1
                    await self._refuse(writer, 409 if fault == "conflict" else 500)
                    continue
                self.counts["forwarded"] += 1
                await self._forward(method, target, headers, body, reader, writer)
                return  # the answer was sent with Connection: close
        except Exception:  # one broken connection must not stop the proxy
            self.counts["proxy-error"] += 1
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, code: int) -> None:
        reason = "Conflict" if code == 409 else "Internal Server Error"
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"injected by the fault proxy: {reason}",
            "reason": "Conflict" if code == 409 else "InternalError",
            "code": code,
        }
        data = json.dumps(status).encode()
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _forward(
        self,
        method: str,
        target: str,
        headers: list[str],
        body: bytes,
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
    ) -> None:
        up_reader, up = await asyncio.open_connection(
            "127.0.0.1", self.cluster.apiserver_port, ssl=self._client_tls()
        )
        try:
            kept = [h for h in headers if h.partition(":")[0].strip().lower() != "connection"]
            request = "\r\n".join([f"{method} {target} HTTP/1.1", *kept, "Connection: close"])
            up.write(request.encode("latin-1") + b"\r\n\r\n" + body)
            await up.drain()

            async def pipe() -> None:
                while chunk := await up_reader.read(65536):
                    client.write(chunk)
                    await client.drain()

            limit = self.watch_seconds if "watch=" in target else None
            try:
                await asyncio.wait_for(pipe(), limit)
            except TimeoutError:
                self.counts["watch-cut"] += 1
        finally:
            with contextlib.suppress(Exception):
                up.close()


class PrometheusFaultProxy:
    """An HTTP proxy in front of a real Prometheus that spoils its answers on demand.

    ``mode``: ``pass`` (untouched), ``slow`` (each answer ``delay`` seconds late),
    ``stale`` (every sample stamped ``stale_by`` seconds in the past) or ``partial``
    (a ``warnings`` entry added). Change :attr:`mode` at any time.
    """

    def __init__(self, upstream: str, *, delay: float = 5.0, stale_by: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.stale_by = stale_by
        self.mode = "pass"
        self.counts: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PrometheusFaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = proxy._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, path: str) -> tuple[int, bytes]:
        mode = self.mode
        self.counts[mode] += 1
        if mode == "slow":
            time.sleep(self.delay)
        try:
            with urllib.request.urlopen(self.upstream + path, timeout=30) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        if mode not in ("stale", "partial") or status != 200:
            return status, data
        answer = json.loads(data)
        if mode == "partial":
            answer["warnings"] = ["remote store shard-2 did not answer: partial response"]
        else:
            _shift_times(answer.get("data"), -self.stale_by)
        return status, json.dumps(answer).encode()


def _shift_times(data: Any, seconds: float) -> None:
    """Move every sample's timestamp of a query answer by ``seconds``."""
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list) or not result:
        return
    if data.get("resultType") == "scalar":
        pairs = [result]
    else:
        pairs = [
            i["value"] for i in result if isinstance(i, dict) and isinstance(i.get("value"), list)
        ]
    for pair in pairs:
        pair[0] = float(pair[0]) + seconds
