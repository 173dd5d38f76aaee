"""``mmedge triton``: write a bundle as a Triton Inference Server model repository (torch-free)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mmedge.cli.console import console, fail
from mmedge.errors import MmedgeError


def triton(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    out: Path = typer.Option(..., "--out", "-o", help="Model repository folder to write."),
    precision: str = typer.Option("fp32", help="Bundle precision whose graphs (and engines) are served."),
    max_batch: int = typer.Option(16, help="max_batch_size of every model."),
    instances: int = typer.Option(1, help="Instances of every model (instance_group count)."),
    queue_delay_us: int = typer.Option(2000, help="Dynamic batching delay of every model (µs)."),
    max_queue: int = typer.Option(64, help="Requests that may wait in each model's queue (0: unbounded); more are "
                                           "refused at once with 503 / UNAVAILABLE."),
    queue_timeout_us: int = typer.Option(0, help="Refuse (503 / UNAVAILABLE) a request queued longer (µs; 0: never)."),
    model_name: str = typer.Option("mmedge", help="Name of the ensemble clients call; other models are prefixed."),
    engines: bool = typer.Option(True, "--engines/--no-engines",
                                 help="Serve TensorRT engines (tensorrt_plan) where `mmedge build` made them."),
    engine_dir: Optional[Path] = typer.Option(None, help="One device-key folder of engines (default: all found)."),
    graph_backend: str = typer.Option("onnxruntime", help="onnxruntime (Triton's ORT backend) | python "
                                                          "(onnxruntime inside Python-backend models)."),
) -> None:
    """Write a Triton model repository: encoders and heads, preprocessing and ensemble rule, wired as an ensemble."""
    from mmedge.serve.model_repository import RepositoryConfig, write_repository
    from mmedge.serve.serve_config import HTTP_MAX_INPUT_SIZE_SINCE, http_max_input_size_flag

    try:
        config = RepositoryConfig(model_name=model_name, precision=precision, max_batch=max_batch,
                                  instances=instances, queue_delay_us=queue_delay_us, max_queue=max_queue,
                                  queue_timeout_us=queue_timeout_us, engines=engines,
                                  engine_dir=engine_dir, graph_backend=graph_backend)
        models = write_repository(bundle, out, config)
    except MmedgeError as e:
        fail(e)
    table = Table(title=f"Triton model repository {out}")
    for column in ("model", "runs on", "serves"):
        table.add_column(column)
    for m in models:
        table.add_row(m.name, m.kind, m.source)
    console.print(table)
    console.print(f"run it: tritonserver --model-repository {out} {http_max_input_size_flag(max_batch)}  (the Python "
                  "models need `pip install mmedge` in Triton's Python environment; the flag refuses HTTP requests "
                  f"larger than the largest valid one with 400 and needs {HTTP_MAX_INPUT_SIZE_SINCE} or later: "
                  "older ones have no limit, leave it out there and put a proxy in front, docs/serving.md); call it "
                  f"with mmedge.client.Client(url, model={model_name!r})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Adds ``triton`` to ``app``."""
    app.command()(triton)
