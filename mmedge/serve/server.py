"""``mmedge serve``: a real Triton Inference Server (through NVIDIA PyTriton) serving a bundle.

Triton does the serving: HTTP and gRPC (KServe v2), dynamic batching, model instances,
health and readiness, Prometheus metrics. Each model instance runs a ``BundleHandler`` over
its own ``mmedge.runtime.Session``. PyTriton is imported lazily: the base install works
without it (``pip install 'mmedge[serve]'``, in its own environment: PyTriton pins numpy<2).

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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.atomic import pid_alive
from mmedge.errors import BackendUnavailable, MmedgeError
from mmedge.serve.serve_config import ServeConfig
from mmedge.serve.handler import BundleHandler
from mmedge.serve.protocol import input_specs, output_specs

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


def _import_pytriton() -> tuple[Any, Any]:
    try:
        from pytriton import model_config, triton
    except ImportError as exc:
        raise BackendUnavailable(f"{_INSTALL} ({exc})") from exc
    return triton, model_config


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
        self._sessions: list[Any] = []
        self._bundle: Any = None
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
        """Opens the sessions, starts Triton and waits until the model is ready."""
        triton_mod, model_config = _import_pytriton()
        try:
            self._open_sessions()
            prepare_environment()
            sweep_workspaces()
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_triton(triton_mod, model_config)
                    break
                except Exception as exc:
                    if attempt == _START_ATTEMPTS or not _is_handshake_race(exc):
                        raise
                    self._stop_triton()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_triton(self, triton_mod: Any, model_config: Any) -> None:
        workspace_root().mkdir(parents=True, exist_ok=True)
        self.workspace = Path(tempfile.mkdtemp(prefix=f"ws-{os.getpid()}-", dir=workspace_root())) / "w"
        self._triton = triton_mod.Triton(config=self._triton_config(triton_mod), workspace=self.workspace)
        self._bind(model_config)
        self._triton.run()

    def _stop_triton(self) -> None:
        triton, self._triton = self._triton, None
        try:
            if triton is not None:
                triton.stop()
        finally:
            if self.workspace is not None:
                shutil.rmtree(self.workspace.parent, ignore_errors=True)

    def _open_sessions(self) -> None:
        from mmedge.runtime import Bundle, Session

        cfg = self.config
        self._bundle = Bundle.open(self.bundle_path)
        threads = cfg.instance_threads(os.cpu_count() or 1)
        for _ in range(cfg.instances):
            self._sessions.append(Session(self._bundle, precision=cfg.precision, backend=cfg.backend, threads=threads))

    def _triton_config(self, triton_mod: Any) -> Any:
        cfg = self.config
        return triton_mod.TritonConfig(
            http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host, grpc_port=cfg.grpc_port,
            metrics_address=cfg.host, metrics_port=cfg.metrics_port, allow_metrics=True, allow_gpu_metrics=False,
            exit_timeout_secs=5, log_verbose=cfg.log_verbose, strict_readiness=True)

    def _bind(self, model_config: Any) -> None:
        cfg, bundle = self.config, self._bundle
        inputs = [model_config.Tensor(name=t.name, dtype=_pytriton_dtype(t.dtype), shape=t.dims, optional=True)
                  for t in input_specs()]  # every registered modality's (plug-ins included)
        outputs = [model_config.Tensor(name=t.name, dtype=_pytriton_dtype(t.dtype), shape=t.dims)
                   for t in output_specs(len(bundle.labels), len(bundle.members))]
        batcher = model_config.DynamicBatcher(max_queue_delay_microseconds=cfg.queue_delay_us) if cfg.batching else None
        handlers = [BundleHandler(s, limits=cfg.limits) for s in self._sessions]
        self._triton.bind(model_name=cfg.model_name, infer_func=handlers, inputs=inputs, outputs=outputs,
                          config=model_config.ModelConfig(batching=True, max_batch_size=cfg.max_batch,
                                                          batcher=batcher), strict=False)

    def is_alive(self) -> bool:
        """Whether Triton and the model's proxy are running."""
        return self._triton is not None and self._triton.is_alive()

    def stop(self) -> None:
        """Stops Triton, closes the sessions and removes the workspace (idempotent)."""
        try:
            self._stop_triton()
        finally:
            for session in self._sessions:
                session.close()
            self._sessions = []
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


def _pytriton_dtype(dtype: Any) -> Any:
    return bytes if np.dtype(dtype) == np.dtype(object) else np.dtype(dtype).type


def serve(bundle: str | Path, config: ServeConfig = ServeConfig(), *,
          on_ready: Callable[[Server], None] | None = None, poll_s: float = 1.0) -> None:
    """Serves ``bundle`` until SIGINT or SIGTERM (or Triton exits), then shuts down cleanly.

    Args:
        bundle: A bundle folder or ``.mmedge`` file.
        config: The serving settings.
        on_ready: Called once the model is ready (e.g. to print the endpoints).
        poll_s: How often the server's health is checked while waiting.

    Raises:
        MmedgeError: Triton exited on its own (the message says so).
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
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
