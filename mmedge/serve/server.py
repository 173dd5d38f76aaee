"""``mmedge serve``: a real Triton Inference Server (through NVIDIA PyTriton) serving a bundle.

Triton does the serving: HTTP and gRPC (KServe v2), dynamic batching with a bounded queue,
model instances, health and readiness, Prometheus metrics. The server runs a one-model
repository (``serve_repository``) on the ``tritonserver`` that PyTriton ships: each model
instance is a Python-backend process running a ``BundleHandler`` over its own
``mmedge.runtime.Session``, which answers every request of a batch on its own (a bad request
gets INVALID_ARG with the runtime's message; the rest of its batch is answered). PyTriton is
imported lazily: the base install works without it (``pip install 'mmedge[serve]'``, in its own
environment: PyTriton pins numpy<2). Its management endpoints (model repository, shared memory,
statistics, trace, logging) need a token that only this process knows.

Shutdown is clean on SIGINT and SIGTERM: Triton stops, sessions close, and the workspace
(Triton's binaries, sockets, model store) is removed. Workspaces live under
``<tmp>/mmedge-serve/ws-<pid>-*``; one left by a killed process is removed at the next start.
"""
from __future__ import annotations

import os
import shutil
import signal
import sysconfig
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from mmedge.atomic import pid_alive
from mmedge.errors import BackendUnavailable, BundleError, MmedgeError
from mmedge.serve.serve_config import ServeConfig
from mmedge.serve.serve_repository import write_serve_repository
from mmedge.serve.supervise import SERVER_NAME, InstanceWatch, RestartBudget, child_pids

__all__ = ["Server", "serve", "workspace_root", "sweep_workspaces", "prepare_environment"]

_INSTALL = ("mmedge serve needs PyTriton: pip install 'mmedge[serve]' (PyTriton pins numpy<2, so use a "
            "virtual environment of its own, e.g. the one .ci/serve_tests.sh makes)")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_START_ATTEMPTS = 3


def _is_handshake_race(exc: BaseException) -> bool:
    """Whether a model load failed on PyTriton's instance handshake race.

    With several instances, PyTriton's first instance binds a Unix socket before it listens
    on it, and the other instances connect as soon as the file exists: under load one of them
    gets ``ConnectionRefusedError`` and Triton marks the model unavailable. Starting again in
    a fresh workspace is safe; any other failure is raised at once.
    """
    text = str(exc)
    return "get_config_from_handshake_server" in text and "Connection refused" in text


def prepare_environment() -> None:
    """Puts this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (inherited by tritonserver).

    Triton's Python-backend stub must load the same libpython as this interpreter; with a
    system libpython first it fails with ``'_thread.RLock' object has no attribute
    '_recursion_count'``.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and (not parts or parts[0] != libdir):
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])


def workspace_root() -> Path:
    """Where serve workspaces go: ``<tmp>/mmedge-serve``."""
    return Path(tempfile.gettempdir()) / "mmedge-serve"


def sweep_workspaces(root: Path | None = None) -> list[Path]:
    """Removes workspaces whose server process is gone (a SIGKILLed ``mmedge serve``).

    Returns:
        The folders removed.
    """
    root = root or workspace_root()
    removed = []
    for path in sorted(root.glob("ws-*")) if root.is_dir() else []:
        pid = path.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _import_pytriton() -> Any:
    try:
        from pytriton import triton
    except ImportError as exc:
        raise BackendUnavailable(f"{_INSTALL} ({exc})") from exc
    return triton


class Server:
    """A running Triton server for one bundle; a context manager (``with Server(...) as s:``).

    Args:
        bundle: A bundle folder or ``.mmedge`` file.
        config: The serving settings.

    Raises:
        BackendUnavailable: PyTriton is not installed.
        BundleError, ConfigError: the bundle or a setting is invalid.
    """

    def __init__(self, bundle: str | Path, config: ServeConfig = ServeConfig()) -> None:
        self.bundle_path = Path(bundle)
        self.config = config
        self._triton: Any = None
        self._bundle: Any = None
        self._watch: InstanceWatch | None = None
        self._budget = RestartBudget(restarts=config.max_restarts)
        self.workspace: Path | None = None

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP endpoint."""
        return f"http://{_url_host(self.config.host)}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        """``grpc://host:port`` of the gRPC endpoint."""
        return f"grpc://{_url_host(self.config.host)}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics URL."""
        return f"http://{_url_host(self.config.host)}:{self.config.metrics_port}/metrics"

    def start(self) -> "Server":
        """Opens the bundle, starts Triton on a one-model repository and waits until the model is ready."""
        triton_mod = _import_pytriton()
        try:
            self._open_bundle()
            prepare_environment()
            sweep_workspaces()
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_triton(triton_mod)
                    break
                except Exception as exc:
                    if attempt == _START_ATTEMPTS or not _is_handshake_race(exc):
                        raise
                    self._stop_triton()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_triton(self, triton_mod: Any) -> None:
        workspace_root().mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"ws-{os.getpid()}-", dir=workspace_root()))
        self.workspace = folder / "w"
        threads = self.config.instance_threads(os.cpu_count() or 1)
        write_serve_repository(self._bundle, folder / "repo", self.config, threads)
        self._triton = triton_mod.Triton(config=self._triton_config(triton_mod, folder / "repo"),
                                         workspace=self.workspace)
        self._triton._run_server()  # PyTriton 0.7.0 (pinned): starts tritonserver; run() would wait 120 s for a
        self._wait_model_ready()    # Triton that already exited (a model that failed to load)
        servers = child_pids(os.getpid(), SERVER_NAME, contains=str(folder))
        self._watch = InstanceWatch(next(iter(servers))) if len(servers) == 1 else None
        if self._watch is not None:
            self._watch.snapshot()

    def _stop_triton(self) -> None:
        triton, self._triton, self._watch = self._triton, None, None
        try:
            if triton is not None:
                triton.stop()
        finally:
            if self.workspace is not None:
                shutil.rmtree(self.workspace.parent, ignore_errors=True)

    def _open_bundle(self) -> None:
        """Opens the bundle here first, so a bad bundle or precision is a typed error before Triton starts."""
        from mmedge.runtime import Bundle

        self._bundle = Bundle.open(self.bundle_path)
        problem = self._bundle.precision_problem(self.config.precision)
        if problem:
            raise BundleError(problem)

    def _triton_config(self, triton_mod: Any, repository: Path) -> Any:
        cfg = self.config
        return triton_mod.TritonConfig(
            model_repository=repository, http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host,
            grpc_port=cfg.grpc_port, metrics_address=cfg.host, metrics_port=cfg.metrics_port, allow_metrics=True,
            allow_gpu_metrics=False, exit_timeout_secs=5, log_verbose=cfg.log_verbose, strict_readiness=True)

    def _wait_model_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.model_ready():
            if not self.is_alive():
                raise MmedgeError(f"Triton exited while loading model {self.config.model_name!r}: "
                                  f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise MmedgeError(f"model {self.config.model_name!r} not ready after {timeout_s:g} s: "
                                  f"{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self) -> str:
        """Triton's error lines (``E...``), the Python errors without their traceback, else the last lines."""
        server = getattr(self._triton, "_triton_server", None)
        lines = (server.logs() if server is not None else "").splitlines()
        errors = [ln.split("] ", 1)[-1].split("\\n\\nAt:")[0] for ln in lines if ln.startswith("E")]
        picked = errors[-2:] or lines[-4:]
        return " | ".join(picked)[-2000:] or "run with --log-verbose 1 to see why"

    def model_ready(self) -> bool:
        """Whether Triton answers that the model is ready (``/v2/models/<name>/ready``)."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/models/{self.config.model_name}/ready",
                                        timeout=2) as reply:
                return reply.status == 200
        except (OSError, ValueError):
            return False

    def supervise(self) -> set[int]:
        """Checks the model's instance processes; if one died, restarts Triton (not ready meanwhile).

        A whole restart, not a model reload: a request that was in the killed process never completes, so the
        old model would never finish unloading (its other instance processes would stay, for good).

        Returns:
            The pids of the instance processes found dead (empty: all well).

        Raises:
            MmedgeError: the restart failed, or instances died more often than ``max_restarts`` allows: stop
                the server and exit non-zero.
        """
        dead = self._watch.dead() if self._watch is not None else set()
        if not dead:
            return dead
        if not self._budget.spend():
            raise MmedgeError(f"model instance processes keep dying ({self._budget.restarts} restarts in "
                              f"{self._budget.window_s:g} s); stopping so that a supervisor restarts the server")
        self._stop_triton()
        self._start_triton(_import_pytriton())
        return dead

    def is_alive(self) -> bool:
        """Whether Triton and the model's proxy are running."""
        return self._triton is not None and self._triton.is_alive()

    def stop(self) -> None:
        """Stops Triton, closes the sessions and removes the workspace (idempotent)."""
        try:
            self._stop_triton()
        finally:
            if self._bundle is not None:
                self._bundle.close()
                self._bundle = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(bundle: str | Path, config: ServeConfig = ServeConfig(), *,
          on_ready: Callable[[Server], None] | None = None, poll_s: float = 1.0,
          on_recover: Callable[[Server, set[int]], None] | None = None) -> None:
    """Serves ``bundle`` until SIGINT or SIGTERM (or Triton exits), then shuts down cleanly.

    Args:
        bundle: A bundle folder or ``.mmedge`` file.
        config: The serving settings.
        on_ready: Called once the model is ready (e.g. to print the endpoints).
        poll_s: How often the server's health and its instance processes are checked.
        on_recover: Called with the dead pids after a killed instance process was replaced (model reloaded).

    Raises:
        MmedgeError: Triton exited on its own, or instances died and could not be replaced (the message says
            so); ``mmedge serve`` then exits non-zero.
    """
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in _STOP_SIGNALS}
    try:
        with Server(bundle, config) as server:
            if on_ready is not None:
                on_ready(server)
            while not stop.wait(poll_s):
                if not server.is_alive():
                    raise MmedgeError("the Triton server exited on its own; run with --log-verbose 1 to see why")
                dead = server.supervise()
                if dead and on_recover is not None:
                    on_recover(server, dead)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
