"""``mmedge serve``: a real Triton Inference Server (PyTriton) serving a bundle; needs ``mmedge[serve]``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmedge.cli.console import console, fail
from mmedge.errors import MmedgeError
from mmedge.runtime.precisions import precision_names


def serve(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 serves other machines)."),
    http_port: int = typer.Option(8000, help="HTTP/REST port (health: /v2/health/ready)."),
    grpc_port: int = typer.Option(8001, help="gRPC port."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (/metrics)."),
    model_name: str = typer.Option("mmedge", help="Triton model name the clients call."),
    precision: str = typer.Option("fp32", help=f"Bundle precision: {' | '.join(precision_names())}."),
    backend: str = typer.Option("auto", help="mmedge runtime backend: auto | ort | ort-cuda | ort-trt | tensorrt."),
    max_batch: int = typer.Option(16, help="Triton max_batch_size: most rows per execution."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Dynamic batching."),
    queue_delay_us: int = typer.Option(2000, help="Dynamic batching: longest wait for more requests (µs)."),
    max_queue: int = typer.Option(64, help="Requests that may wait in the queue (0: unbounded); more are refused at "
                                           "once with 503 / UNAVAILABLE. Needs --batching."),
    queue_timeout_us: int = typer.Option(0, help="Refuse (503 / UNAVAILABLE) a request queued longer (µs; 0: never)."),
    instances: int = typer.Option(1, help="Model instances (each its own Session)."),
    max_restarts: int = typer.Option(3, help="Restarts within 10 min after an instance process died; one more "
                                             "death exits non-zero (0: exit on the first)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads per graph per instance (default cores/instances)."),
    log_verbose: int = typer.Option(0, help="Triton verbose log level (0 = info)."),
) -> None:
    """Serve a bundle on Triton Inference Server (HTTP, gRPC, metrics) until Ctrl+C or SIGTERM."""
    from mmedge.serve.serve_config import ServeConfig
    from mmedge.serve.server import serve as run_server

    try:
        config = ServeConfig(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             model_name=model_name, precision=precision, backend=backend, max_batch=max_batch,
                             batching=batching, queue_delay_us=queue_delay_us, max_queue=max_queue,
                             queue_timeout_us=queue_timeout_us, instances=instances, max_restarts=max_restarts,
                             threads=threads, log_verbose=log_verbose)
        run_server(bundle, config, on_ready=_print_ready, on_recover=_print_recovered)
    except MmedgeError as e:
        fail(e)
    console.print("server stopped; workspace removed")


def _print_ready(server) -> None:
    cfg = server.config
    batching = f"dynamic batching up to {cfg.max_batch} ({cfg.queue_delay_us} µs)" if cfg.batching else "no batching"
    console.print(f"[bold]serving[/] {server.bundle_path} as model [bold]{cfg.model_name}[/] ({cfg.precision}, "
                  f"{cfg.instances} instance(s), {batching})")
    console.print(f"  HTTP    {server.http_url}  (ready: {server.http_url}/v2/health/ready)")
    console.print(f"  gRPC    {server.grpc_url}")
    console.print(f"  metrics {server.metrics_url}")
    most = cfg.limits.max_request_bytes(cfg.max_batch) / 2**20
    console.print(f"  largest valid request {most:.0f} MiB (PyTriton's tritonserver has no request size limit: make "
                  "this a front proxy's body limit, docs/serving.md)", highlight=False)
    console.print("ready; Ctrl+C or SIGTERM stops the server", highlight=False)


def _print_recovered(server, dead: set[int]) -> None:
    console.print(f"model instance process(es) {sorted(dead)} died: Triton restarted, model "
                  f"{server.config.model_name!r} ready again", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``serve`` to ``app``."""
    app.command()(serve)
