"""``mmedge inspect`` and ``mmedge run``: the device side, torch-free (the base install)."""
from __future__ import annotations

import inspect as _inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import typer

from mmedge.cli.console import console, fail
from mmedge.cli.tables import accuracy_table, components_table, precisions_table
from mmedge.errors import MmedgeError
from mmedge.runtime.precisions import precision_names


def inspect(bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file.")) -> None:
    """Print what a bundle holds: components, precisions, sizes, parity, metrics."""
    from mmedge.runtime import Bundle

    try:
        b = Bundle.open(bundle)
    except MmedgeError as e:
        fail(e)
    m = b.manifest.to_json()
    console.print(f"[bold]{b.name}[/] ({m['format']}): {m['task']}, labels {m['labels']}, "
                  f"modalities {m['modalities']}, ensemble {m['ensemble']['method']}")
    console.print(precisions_table(m))
    console.print(components_table(m))
    if m.get("metrics"):
        console.print(accuracy_table(m))
    console.print(f"versions: {json.dumps(m.get('versions', {}))}")


def run(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    precision: str = typer.Option("fp32", help=f"A precision the bundle has: {' | '.join(precision_names())}."),
    backend: str = typer.Option("auto", help="auto | ort | ort-cuda | ort-trt | tensorrt"),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON."),
    query: Optional[list[str]] = typer.Option(None, help="Free text to score the input against with the model's own "
                                                        "similarity (a CLIP, SigLIP or CLAP bundle; repeatable): "
                                                        "prints the queries ranked."),
    **inputs: Optional[str],
) -> None:
    """Run a bundle on one sample and print the prediction (or, with --query, the queries ranked)."""
    from mmedge.runtime import Session

    given = {m: v for m, v in inputs.items() if v is not None}  # one --<modality> option per modality record
    if query:
        return _rank_queries(bundle, precision, backend, given, list(query), as_json)
    try:
        with Session(bundle, precision=precision, backend=backend) as session:
            pred = session.predict(**given)
            labels = list(session.bundle.labels)
    except MmedgeError as e:
        fail(e)
    result = {"label": pred.label, "probability": pred.probability, "backend": pred.backend, "precision": pred.precision,
              "probabilities": dict(zip(labels, pred.probabilities[0].round(6).tolist())),
              "members": {k: v[0].round(6).tolist() for k, v in pred.member_probabilities.items()},
              "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()}}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"[bold]{pred.label}[/] (p={pred.probability:.3f}) — {pred.backend}, {pred.precision}, "
                  f"{pred.timings_ms['total']:.1f} ms")



def _rank_queries(bundle: Path, precision: str, backend: str, given: dict, queries: list[str], as_json: bool) -> None:
    """``mmedge run --query``: ``Session.similarity`` of the one input against the queries, best first."""
    from mmedge.runtime import Session
    from mmedge.runtime.similarity import activate, bundle_similarity

    try:
        with Session(bundle, precision=precision, backend=backend) as session:
            scores = session.similarity(text=queries, **given)[:1]  # (1, Q)
            probs = activate(scores, bundle_similarity(session.bundle).activation)[0]
            scores = scores[0]
    except MmedgeError as e:
        fail(e)
    ranked = [{"query": queries[i], "score": round(float(scores[i]), 6), "probability": round(float(probs[i]), 6)}
              for i in np.argsort(-scores, kind="stable")]
    if as_json:
        typer.echo(json.dumps({"queries": ranked, "precision": precision}))
        return
    for row in ranked:
        console.print(f"{row['score']:9.4f}  p={row['probability']:.3f}  {row['query']}")


def _with_modality_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with one ``--<modality>`` option per registered modality record (its ``cli_help``),
    after its first argument, in place of its ``**inputs``."""
    from mmedge.runtime.modalities import modalities

    params = [p for p in _inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    options = [_inspect.Parameter(m.name, _inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                                  default=typer.Option(None, help=m.cli_help)) for m in modalities()]
    positional = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in params[:1]]
    rest = [p.replace(kind=p.KEYWORD_ONLY) for p in params[1:]]
    command.__signature__ = _inspect.Signature(positional + options + rest)  # type: ignore[attr-defined]
    return command


def register(app: typer.Typer) -> None:
    """Adds ``inspect`` and ``run`` to ``app``."""
    app.command()(inspect)
    app.command()(_with_modality_options(run))
