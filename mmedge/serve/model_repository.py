"""``mmedge triton``: a bundle as a Triton model repository (ensemble scheduling over per-component models).

For a bundle called by clients as ``NAME`` (``RepositoryConfig.model_name``), the repository holds:

| model                       | backend / platform                      | does                                   |
|-----------------------------|-----------------------------------------|----------------------------------------|
| `NAME.preprocess.<modality>`| python (`triton_models/preprocess.py`)  | pixels/text/wave -> encoder inputs      |
| `NAME.encoder.<modality>`   | `onnxruntime_onnx` or `tensorrt_plan`   | the bundle's encoder graph              |
| `NAME.heads`                | `onnxruntime_onnx` or `tensorrt_plan`   | every head and the rule as one graph (the bundle's merged heads graph, where it has one) |
| `NAME.head.<member>`        | `onnxruntime_onnx` or `tensorrt_plan`   | the member's fusion head graph (variants that run some members, or no merged graph) |
| `NAME.combine[.<variant>]`  | python (`triton_models/combine.py`)     | the ensemble rule -> the mmedge outputs |
| `NAME[.<variant>]`          | `ensemble`                              | wires the steps; the mmedge wire contract (`protocol`) |

A bundle with a ``similarity`` record also gets ``NAME.similarity`` (its query modality and ``queries`` -> scores;
``similarity_repository``). A variant ``NAME.without-audio`` (etc.) is written for every set of optional modalities a
client may leave out, since a Triton ensemble runs all its steps. ``tensorrt_plan`` is used
for a component where ``mmedge build`` left engines (``<bundle>/engines/<device-key>/``, or
``engine_dir``); several device keys become ``cc_model_filenames`` per compute capability.
With ``graph_backend="python"`` the graphs run through onnxruntime inside Python-backend
models (``steps.OnnxGraph``), for Triton builds without the ONNX Runtime backend, and for int8
bundles on x86 CPUs without VNNI, whose exact kernels only the runtime's sessions ask for
(``mmedge.runtime.int8_kernels``; Triton's ONNX Runtime backend takes no such session option).
The Python-backend models import ``mmedge.runtime``: install ``mmedge`` where Triton runs them.
"""
from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.merged_heads import ENSEMBLE_OUTPUT, HEADS, has_merged, member_output
from mmedge.serve.serve_config import DEFAULT_MAX_QUEUE, DEFAULT_MODEL_NAME, check_counts, check_model_name, \
    dynamic_batching
from mmedge.serve.pbtxt import Enum, string_parameters, tensor, to_pbtxt
from mmedge.serve.protocol import input_specs, modality_inputs, output_specs
from mmedge.serve.steps import merged_input

__all__ = ["RepositoryConfig", "RepositoryModel", "write_repository", "GRAPH_BACKENDS"]

GRAPH_BACKENDS = ("onnxruntime", "python")
ENGINE_SUFFIX, RECORD_SUFFIX = ".engine", ".engine.json"  # as `mmedge build` writes them
_MODEL_FILES = Path(__file__).resolve().parent / "triton_models"
_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
               "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int8)": "INT8",
               "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL"}


@dataclass(frozen=True)
class RepositoryConfig:
    """What ``write_repository`` writes.

    Attributes:
        model_name: The ensemble's name (the name clients call); other models are prefixed with it.
        precision: The bundle precision whose graphs (and engines) are used.
        max_batch: ``max_batch_size`` of every model.
        instances: Instances of each model (``instance_group`` count).
        queue_delay_us: Dynamic batching delay of every model (0: batch what is queued).
        max_queue: Requests that may wait in each model's queue (0: unbounded); more are refused at once
            with UNAVAILABLE (HTTP 503).
        queue_timeout_us: A request waiting longer in a queue is refused with UNAVAILABLE (0: no timeout).
        engines: Use ``tensorrt_plan`` where engines exist (False: ONNX graphs only).
        engine_dir: A device-key folder of engines (None: every folder under ``<bundle>/engines``).
        graph_backend: ``onnxruntime`` (Triton's ONNX Runtime backend) or ``python``.
    """

    model_name: str = DEFAULT_MODEL_NAME
    precision: str = "fp32"
    max_batch: int = 16
    instances: int = 1
    queue_delay_us: int = 2000
    max_queue: int = DEFAULT_MAX_QUEUE
    queue_timeout_us: int = 0
    engines: bool = True
    engine_dir: Path | None = None
    graph_backend: str = "onnxruntime"

    def __post_init__(self) -> None:
        check_model_name(self.model_name)
        check_counts(self, (("max_batch", 1), ("instances", 1), ("queue_delay_us", 0), ("max_queue", 0),
                            ("queue_timeout_us", 0)))
        if self.graph_backend not in GRAPH_BACKENDS:
            raise ConfigError(f"graph_backend must be one of {list(GRAPH_BACKENDS)}, got {self.graph_backend!r}")


@dataclass(frozen=True)
class RepositoryModel:
    """One model written: its name, what runs it, and the file it serves (if any)."""

    name: str
    kind: str
    source: str = ""


# -- graph I/O -------------------------------------------------------------------------------


def _graph_io(path: Path) -> tuple[list[dict], list[dict]]:
    """Triton ``input`` / ``output`` messages of an ONNX graph (batch axis dropped, dynamic axes -1)."""
    from mmedge.runtime.backends.ort import create_session

    session = create_session(path, threads=1)

    def specs(nodes: Any) -> list[dict]:
        out = []
        for node in nodes:
            if node.type not in _ONNX_TYPES:
                raise BundleError(f"{path.name}: tensor {node.name!r} has type {node.type}, which Triton cannot take")
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in node.shape[1:]]
            out.append(tensor(node.name, _ONNX_TYPES[node.type], dims))
        return out

    return specs(session.get_inputs()), specs(session.get_outputs())


# -- engines ---------------------------------------------------------------------------------


def _engine_dirs(bundle: Any, config: RepositoryConfig) -> list[Path]:
    """Device-key folders to look in: ``engine_dir``, or each folder of the bundle's engine root."""
    if not config.engines:
        return []
    if config.engine_dir is not None:
        if not Path(config.engine_dir).is_dir():
            raise ConfigError(f"engine_dir {config.engine_dir} is not a folder; pass the device-key folder that "
                              "`mmedge build` wrote, or leave it out")
        return [Path(config.engine_dir)]
    source = Path(bundle.source)  # engines: <bundle>/engines, or <file>.engines beside a .mmedge
    root = source / "engines" if source.is_dir() else source.with_name(source.name + ".engines")
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _engines(bundle: Any, component: str, config: RepositoryConfig, dirs: list[Path]) -> dict[str, Path]:
    """Compute capability -> engine of ``component``, from the build records ``mmedge build`` wrote."""
    graph = bundle.graph_path(component, config.precision)
    rel = graph.relative_to(bundle.root)
    found: dict[str, Path] = {}
    for folder in dirs:
        engine = folder / rel.parent / (graph.stem + ENGINE_SUFFIX)
        record_path = engine.with_name(graph.stem + RECORD_SUFFIX)
        if not (engine.is_file() and record_path.is_file()):
            continue
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("source_sha256") != bundle.graph_entry(component, config.precision).sha256:
            continue  # built from another graph: stale, `mmedge build` rebuilds it
        _check_profiles(engine, record, config.max_batch)
        found.setdefault(str(record.get("compute_capability") or "default"), engine)
    return found


def _check_profiles(engine: Path, record: Mapping[str, Any], max_batch: int) -> None:
    for name, profile in (record.get("profiles") or {}).items():
        most = (profile.get("max") or [max_batch])[0]
        if most < max_batch:
            raise ConfigError(f"engine {engine} takes at most {most} rows ({name}), less than max_batch {max_batch}; "
                              f"pass --max-batch {most}, or rebuild with `mmedge build --max-batch {max_batch}`")


# -- model configs ----------------------------------------------------------------------------


def _common(name: str, config: RepositoryConfig, kind: str) -> dict[str, Any]:
    return {"name": name, "max_batch_size": config.max_batch,
            "dynamic_batching": dynamic_batching(config),
            "instance_group": [{"count": config.instances, "kind": Enum(kind)}]}


def _write(folder: Path, config: dict[str, Any]) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a model of the same name from an earlier run
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(config), encoding="utf-8")


def _graph_model(out: Path, name: str, graph: Path, io: tuple[list[dict], list[dict]], engines: dict[str, Path],
                 config: RepositoryConfig, disabled_optimizers: tuple[str, ...] = ()) -> RepositoryModel:
    inputs, outputs = io
    folder = out / name
    if engines:
        model = {**_common(name, config, "KIND_GPU"), "platform": "tensorrt_plan", "input": inputs, "output": outputs}
        files = {cc: f"model.{cc}.plan" if len(engines) > 1 else "model.plan" for cc in engines}
        model["default_model_filename"] = files[next(iter(engines))]
        if len(engines) > 1:
            model["cc_model_filenames"] = [{"key": cc, "value": f} for cc, f in files.items()]
        _write(folder, model)
        for cc, engine in engines.items():
            shutil.copyfile(engine, folder / "1" / files[cc])
        return RepositoryModel(name, "tensorrt_plan", ", ".join(str(e) for e in engines.values()))
    if config.graph_backend == "python":  # the precision's ONNX Runtime settings, as Session applies them in-process
        params = {"step": "onnx_graph", "precision": config.precision,
                  "disabled_optimizers": json.dumps(list(disabled_optimizers))}
        _python_model(out, name, config, params, inputs, outputs)
    else:
        _write(folder, {**_common(name, config, "KIND_CPU"), "platform": "onnxruntime_onnx",
                        "input": inputs, "output": outputs})
    shutil.copyfile(graph, folder / "1" / "model.onnx")
    return RepositoryModel(name, "onnxruntime_onnx" if config.graph_backend == "onnxruntime" else "python+onnxruntime",
                           graph.name)


def _python_model(out: Path, name: str, config: RepositoryConfig, params: dict[str, str],
                  inputs: list[dict], outputs: list[dict]) -> Path:
    folder = out / name
    _write(folder, {**_common(name, config, "KIND_CPU"), "backend": "python", "input": inputs, "output": outputs,
                    "parameters": string_parameters(params)})
    shutil.copyfile(_MODEL_FILES / "model.py", folder / "1" / "model.py")
    return folder


def _preprocess_model(out: Path, bundle: Any, modality: str, encoder_inputs: list[dict],
                      config: RepositoryConfig) -> RepositoryModel:
    """The Python model of ``mmedge.serve.steps.Preprocess``: the modality's contract inputs -> its encoder's
    inputs, named from the bundle's spec (``Modality.encoder_inputs``) and fed as ``Session`` feeds them."""
    from mmedge.runtime.modalities import encoder_feed, get_modality
    from mmedge.runtime.specs import spec_files, spec_to_dict

    name, record, spec = f"{config.model_name}.preprocess.{modality}", get_modality(modality), bundle.specs[modality]
    mapping = encoder_feed(f"encoder.{modality}", [t["name"] for t in encoder_inputs], record.encoder_inputs(spec))
    params = {"step": "preprocess", "modality": modality, "spec": json.dumps(spec_to_dict(spec)),
              "outputs": json.dumps(mapping)}
    inputs = [tensor(t.name, t.triton_dtype, t.dims) for t in input_specs([modality])]
    folder = _python_model(out, name, config, params, inputs, encoder_inputs)
    for rel in spec_files(record.spec_class, spec).values():  # the tokenizer: the step reads it from its folder
        (folder / "1" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "1" / rel).write_bytes(bundle.read_bytes(rel))
    return RepositoryModel(name, "python", f"mmedge.serve.steps.Preprocess({modality})")


@dataclass(frozen=True)
class _Variant:
    suffix: str
    modalities: tuple[str, ...]
    members: tuple[Any, ...]
    note: str
    merged: bool = False  # runs the bundle's merged heads graph (every member ran, as Session does)


def _variants(bundle: Any, precision: str) -> list[_Variant]:
    """The full ensemble, and one per set of optional modalities left out that still leaves members to run;
    a variant running every member uses the merged heads graph where the bundle has one at ``precision``."""
    merged, variants = has_merged(bundle, precision), []
    optional = bundle.optional_modalities
    for r in range(len(optional) + 1):
        for dropped in itertools.combinations(optional, r):
            given = tuple(m for m in bundle.modalities if m not in dropped)
            members = tuple(m for m in bundle.members if set(m.modalities) <= set(given))
            if not members or (sum(m.weight for m in members) <= 0 and bundle.ensemble.method != "soft_vote"):
                continue
            used = tuple(m for m in given if any(m in mb.modalities for mb in members))
            note = (f"optional modalities {list(dropped)} not given: ran {[m.name for m in members]}, ensemble "
                    "weights re-normalized over the members that ran") if dropped else ""
            variants.append(_Variant(".without-" + "-".join(dropped) if dropped else "", used, members, note,
                                     merged and members == tuple(bundle.members)))
    return variants


def _combine_model(out: Path, bundle: Any, variant: _Variant, backend: str, config: RepositoryConfig
                   ) -> RepositoryModel:
    name = f"{config.model_name}.combine{variant.suffix}"
    members = [{"name": m.name, "weight": m.weight, "temperature": m.temperature} for m in variant.members]
    params = {"step": "combine", "method": bundle.ensemble.method, "labels": json.dumps(list(bundle.labels)),
              "members": json.dumps(members), "all_members": json.dumps([m.name for m in bundle.members]),
              "backend": backend, "precision": config.precision, "note": variant.note,
              "stacking": json.dumps(_plain(bundle.ensemble.stacking))}  # "null" for the other rules
    params["merged"] = "1" if variant.merged else "0"
    inputs = [tensor(n, "FP32", [len(bundle.labels)]) for n in _combine_inputs(variant)]
    outputs = [tensor(t.name, t.triton_dtype, t.dims) for t in output_specs(len(bundle.labels), len(bundle.members))]
    _python_model(out, name, config, params, inputs, outputs)
    return RepositoryModel(name, "python", f"mmedge.serve.steps.Combine({bundle.ensemble.method})")


def _combine_inputs(variant: _Variant) -> list[str]:
    """The combine step's inputs: the merged heads graph's outputs, or each member head's logits."""
    if variant.merged:
        return [merged_input(n) for n in (ENSEMBLE_OUTPUT, *(member_output(m.name) for m in variant.members))]
    return [f"logits.{m.name}" for m in variant.members]


def _plain(value: Any) -> Any:
    """A manifest value (read-only mappings, tuples) as plain JSON types."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    return {"model_name": model, "model_version": -1,
            "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
            "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}


def _ensemble(out: Path, bundle: Any, variant: _Variant, io: dict[str, tuple[list, list]],
              config: RepositoryConfig) -> RepositoryModel:
    prefix, name = config.model_name, config.model_name + variant.suffix
    needed = {f for m in variant.members for f in m.inputs}
    steps = []
    for modality in variant.modalities:
        enc_in, enc_out = io[f"encoder.{modality}"]
        feed = {t["name"]: f"{modality}.{t['name']}" for t in enc_in}
        steps.append(_step(f"{prefix}.preprocess.{modality}", {n: n for n in modality_inputs(modality)}, feed))
        steps.append(_step(f"{prefix}.encoder.{modality}", {k: v for k, v in feed.items()},
                           {t["name"]: t["name"] for t in enc_out if t["name"] in needed}))
    steps += _head_steps(prefix, variant, io)
    contract_out = output_specs(len(bundle.labels), len(bundle.members))
    steps.append(_step(f"{prefix}.combine{variant.suffix}", {n: n for n in _combine_inputs(variant)},
                       {t.name: t.name for t in contract_out}))
    inputs = [tensor(t.name, t.triton_dtype, t.dims) for t in input_specs(variant.modalities)]
    _write(out / name, {"name": name, "platform": "ensemble", "max_batch_size": config.max_batch, "input": inputs,
                        "output": [tensor(t.name, t.triton_dtype, t.dims) for t in contract_out],
                        "ensemble_scheduling": {"step": steps}})
    return RepositoryModel(name, "ensemble", f"modalities {list(variant.modalities)}, "
                                             f"members {[m.name for m in variant.members]}")


def _head_steps(prefix: str, variant: _Variant, io: dict[str, tuple[list, list]]) -> list[dict[str, Any]]:
    """The merged heads graph's step, or one step per member head."""
    if variant.merged:
        heads_in, heads_out = io[HEADS]
        return [_step(f"{prefix}.{HEADS}", {t["name"]: t["name"] for t in heads_in},
                      {t["name"]: merged_input(t["name"]) for t in heads_out})]
    return [_step(f"{prefix}.head.{m.name}", {t["name"]: t["name"] for t in io[f"head.{m.name}"][0]},
                  {m.output: f"logits.{m.name}"}) for m in variant.members]


def write_repository(bundle: Any, out: str | Path, config: RepositoryConfig = RepositoryConfig()
                     ) -> list[RepositoryModel]:
    """Writes ``bundle`` as a Triton model repository under ``out``.

    Args:
        bundle: A ``Bundle``, or a bundle folder / ``.mmedge`` file.
        out: The repository folder (created; models already in it with the same names are replaced).
        config: What to write.

    Returns:
        The models written, ensembles last.

    Raises:
        BundleError: an invalid bundle, or a precision it does not have.
        ConfigError: a bad setting.
    """
    from mmedge.runtime.bundle import Bundle

    owned = not isinstance(bundle, Bundle)
    bundle = Bundle.open(bundle) if owned else bundle
    try:
        return _write_all(bundle, Path(out), config)
    finally:
        if owned:
            bundle.close()


def _write_all(bundle: Any, out: Path, config: RepositoryConfig) -> list[RepositoryModel]:
    problem = bundle.precision_problem(config.precision)
    if problem:
        raise BundleError(problem)
    from mmedge.serve.similarity_repository import similarity_modalities_served, similarity_models

    variants = _variants(bundle, config.precision)
    used = {m for v in variants for m in v.modalities} | set(similarity_modalities_served(bundle))
    heads = [HEADS] if any(v.merged for v in variants) else []
    separate = {m.name for v in variants if not v.merged for m in v.members}
    components = ([f"encoder.{m}" for m in bundle.modalities if m in used] + heads
                  + [f"head.{m.name}" for m in bundle.members if m.name in separate])
    dirs, written, io = _engine_dirs(bundle, config), [], {}
    out.mkdir(parents=True, exist_ok=True)
    for component in components:
        graph = bundle.graph_path(component, config.precision)
        io[component] = _graph_io(graph)
        entry = bundle.graph_entry(component, config.precision)
        written.append(_graph_model(out, f"{config.model_name}.{component}", graph, io[component],
                                    _engines(bundle, component, config, dirs), config,
                                    tuple(entry.ort_disabled_optimizers)))
    for modality in (m for m in bundle.modalities if m in used):
        written.append(_preprocess_model(out, bundle, modality, io[f"encoder.{modality}"][0], config))
    kinds = sorted({w.kind for w in written if w.kind != "python"})
    for variant in variants:
        written.append(_combine_model(out, bundle, variant, "triton:" + "+".join(kinds), config))
    written.extend(similarity_models(out, bundle, io, config))
    written.extend(_ensemble(out, bundle, v, io, config) for v in variants)
    return written
