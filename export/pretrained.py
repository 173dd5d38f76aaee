"""Pretrained dual encoders (CLIP, SigLIP, CLAP) to bundles, as themselves: ``mmedge export hf:./clip``.

    from mmedge.export.pretrained import export_pretrained

    export_pretrained("./clip", labels=["cat", "dog"], prompts=["a photo of a {}", "a picture of a {}"],
                      calib="photos/", out="bundles/clip")

The bundle holds both towers (the image or audio one and the text one) and a ``zero_shot`` member
(``mmedge.fusion.zero_shot``): ``Session.predict(image=...)`` runs only the image tower and the member;
``Session.similarity(image=..., text=[...])`` scores free text with the model's own scale and bias.
Heads trained on the same tower's features can be members beside it (``heads``); their ensemble
weights and temperatures are fit on ``val_data`` when it is given.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.errors import ConfigError
from mmedge.export.exporter import ExportConfig
from mmedge.fusion.zero_shot import DEFAULT_PROMPTS, check_prompts, zero_shot_head

__all__ = ["export_pretrained", "ZERO_SHOT_MEMBER", "prompt_calibration", "similarity_record", "optional_modalities"]

ZERO_SHOT_MEMBER = "zero_shot"


def similarity_record(model) -> Any:
    """The manifest's ``SimilarityInfo`` of an ensemble holding the text tower and another tower of the
    same pretrained dual encoder (its scale per query modality, bias, activation); None otherwise."""
    from mmedge.encoders.pretrained import PretrainedTower
    from mmedge.runtime.manifest import SimilarityInfo

    towers = {m: e for m, e in model.encoders.items() if isinstance(e, PretrainedTower)}
    text = towers.get("text")
    if text is None:
        return None
    queries = [m for m, e in towers.items() if m != "text" and e.folder == text.folder
               and text.scores.get(m) is not None and text.scores[m].scale is not None]
    if not queries:
        return None
    first = text.scores[queries[0]]
    return SimilarityInfo(modalities=(*queries, "text"), scale={m: text.scores[m].scale for m in queries},
                          bias=first.bias, activation=first.activation, family=text.record["family"])


def optional_modalities(recipe) -> tuple[str, ...]:
    """The modalities no member reads (a zero-shot bundle's text tower, kept for similarity): a
    ``Session.predict`` call may leave them out."""
    return tuple(m for m in recipe.modalities if not any(m in mb.modalities for mb in recipe.members))


def prompt_calibration(calib: Any, query: str, texts: Sequence[str], *, rate: int, limit: int) -> list[dict[str, Any]]:
    """Calibration samples for both towers: the ``query`` samples of ``calib`` (a JSONL file, a
    folder or raw-input dicts), each paired with one of ``texts`` (the label prompts: real texts of
    the task) in turn, or with the calibration's own texts when it has them."""
    from mmedge.export.user_samples import calibration_items

    items, _ = calibration_items(calib, (query,), labels=[], rate=rate, limit=limit)
    own = _own_texts(calib, limit)
    pool = own or list(texts)
    return [{query: value, "text": text} for value, text in zip(items[query], itertools.cycle(pool))]


def _own_texts(calib: Any, limit: int) -> list[str]:
    from mmedge.export.calibration_reader import load_calibration

    if not isinstance(calib, (str, Path)):
        return [str(s["text"]) for s in calib if isinstance(s, Mapping) and s.get("text")][:limit] \
            if isinstance(calib, (list, tuple)) else []
    try:
        return list(load_calibration(Path(calib), ("text",), rate=16000).get("text", []))[:limit]
    except Exception:  # noqa: BLE001 - a calibration set without texts: the prompts are used
        return []


def export_pretrained(folder: str | Path, *, labels: Sequence[str], out: str | Path, calib: Any = None,
                      prompts: Sequence[str] = DEFAULT_PROMPTS, modality: str | None = None,
                      heads: Mapping[str, Any] | None = None, eval_data: Any = None, val_data: Any = None,
                      specs: Mapping[str, Any] | None = None, config: ExportConfig = ExportConfig(),
                      name: str | None = None) -> dict[str, Any]:
    """Exports a pretrained dual encoder with a zero-shot member (and any trained heads beside it).

    Args:
        folder: A CLIP, SigLIP or CLAP folder (``hf:PATH`` or PATH) with its tokenizer and processor.
        labels: Class names, in logit order.
        out: The bundle folder to write.
        calib: Real samples of the scored modality (a folder or JSONL of images / clips, or raw-input
            dicts); texts are the label prompts unless it has its own. Default: ``eval_data``.
        prompts: Templates with one ``{}`` (several are averaged, as CLIP's paper does).
        modality: The tower scored on the device (default: image, or audio for CLAP).
        heads: More members: name -> ``Member(head, inputs=("image_pooled",))`` or a ``FusionHead``.
        eval_data: Labelled samples for the accuracy report per precision.
        val_data: Labelled samples the members' temperatures and ensemble weights are fit on
            (only with ``heads``; default: equal weights, temperature 1).
        specs: modality -> spec overriding the folder's own (e.g. ``TextSpec`` with another ``max_length``).
        config: Precisions, tolerances, sample counts.
        name: The bundle's name (default: the folder's name).

    Returns:
        The manifest as written.

    Raises:
        ConfigError: a folder that is not a supported dual encoder, bad labels or prompts, no calibration.
    """
    from mmedge.config import encoder_spec
    from mmedge.export.user_model import Member, export_model
    from mmedge.hf_folder import HF_PREFIX, hf_name, is_hf_name

    hf = hf_name(str(folder) if is_hf_name(str(folder)) else f"{HF_PREFIX}{folder}")
    prompts = check_prompts(prompts)
    specs = dict(specs or {})
    head = zero_shot_head(hf, labels=labels, prompts=prompts, modality=modality, text_spec=specs.get("text"))
    query = head.modalities[0]
    members = {ZERO_SHOT_MEMBER: Member(head, tuple(head.input_names())), **dict(heads or {})}
    source = calib if calib is not None else eval_data
    if source is None:
        raise ConfigError(f"pass calib (or eval_data): real {query} samples of the task to calibrate int8 and check "
                          "the graphs on (a folder or JSONL of them)")
    texts = [p.format(label) for label in labels for p in prompts]
    rate = int(getattr(specs.get(query) or encoder_spec(hf, query), "sample_rate", 16000))
    samples = prompt_calibration(source, query, texts, rate=rate, limit=config.calib_samples)
    if val_data is not None and len(members) > 1:
        members = _fitted(members, hf, query, labels, val_data, specs, rate)
    return export_model(encoders={query: hf, "text": hf}, heads=members, labels=labels, out=out, calib=samples,
                        eval_data=eval_data, specs=specs, name=name or Path(hf[len(HF_PREFIX):]).name, config=config)


def _fitted(members: Mapping[str, Any], hf: str, query: str, labels: Sequence[str], val_data: Any,
            specs: Mapping[str, Any], rate: int) -> dict[str, Any]:
    """The members with temperatures and ensemble weights fit on ``val_data`` (as training fits them)."""
    from mmedge.ensemble_fit import fit_temperature, fit_weights
    from mmedge.export.user_model import Member, build_ensemble
    from mmedge.export.user_samples import eval_dataset
    from mmedge.features import modality_inputs
    from mmedge.runtime.ensemble import softmax

    model, tokenizer = build_ensemble(encoders={query: hf}, heads=members, labels=labels,
                                      specs={query: specs[query]} if query in specs else None)
    data = eval_dataset(val_data, (query,), labels=labels, task="classification", rate=rate)
    rows = np.arange(len(data))
    arrays = modality_inputs(data, query, rows, model.recipe, tokenizer)
    logits = _member_logits(model, arrays)
    temps = [fit_temperature(logits[n], data.y) for n in members]
    weights = fit_weights(np.stack([softmax(logits[n], t) for n, t in zip(members, temps)]), data.y)
    return {n: Member(m.head if isinstance(m, Member) else m, m.inputs if isinstance(m, Member) else (), float(w), t)
            for (n, m), w, t in zip(members.items(), weights, temps)}


def _member_logits(model, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    logits = model.member_logits({k: torch.from_numpy(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in logits.items()}
