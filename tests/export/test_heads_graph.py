"""The merged heads graph: every member head and the ensemble rule as one graph, equal to the separate heads
plus the runtime's numpy rule; a Session runs it as one runner; bundles without it run as before."""
from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import onnx
import pytest

from mmedge.errors import BundleError
from mmedge.export.bundle_writer import write_bundle
from mmedge.export.heads_graph import MERGED_ATOL, compose_heads, with_heads_graphs
from mmedge.runtime import Bundle, Session
from mmedge.runtime.backends.ort import create_session
from mmedge.runtime.ensemble import EnsembleMethod, Stacking, ensemble_prediction
from mmedge.runtime.manifest import Manifest
from mmedge.runtime.merged_heads import ENSEMBLE_OUTPUT, HEADS, member_output

TEXTS = ["a photo of the digit seven", "three", "a handwritten zero"]


def _features(manifest: Manifest, batch: int, tokens: int, seed: int) -> dict[str, np.ndarray]:
    """Random head inputs of the encoders' output shapes (masks: a valid prefix per row)."""
    rng = np.random.default_rng(seed)
    out = {}
    for enc in manifest.encoders.values():
        for t in enc.outputs:
            shape = [batch if i == 0 else (tokens if isinstance(d, str) or d is None else d) for i, d in enumerate(t.shape)]
            if t.name.endswith("_mask"):
                out[t.name] = (np.arange(shape[1])[None, :] < rng.integers(1, shape[1] + 1, (batch, 1))).astype(t.dtype)
            else:
                out[t.name] = rng.normal(0, 1, shape).astype(t.dtype)
    return out


def _cases(manifest: Manifest) -> list[dict[str, np.ndarray]]:
    return [_features(manifest, b, t, seed) for seed, (b, t) in enumerate([(1, 5), (2, 16), (7, 9)])]


def _stacking(members: int, classes: int = 10) -> Stacking:
    rng = np.random.default_rng(3)
    return Stacking(rng.normal(0, 0.8, (classes, members * classes)), rng.normal(0, 0.2, classes))


def _with_rule(manifest: Manifest, method: EnsembleMethod) -> Manifest:
    stacking = _stacking(len(manifest.members)).to_dict() if method is EnsembleMethod.STACKING else None
    return dataclasses.replace(manifest, ensemble=dataclasses.replace(manifest.ensemble, method=method.value,
                                                                     stacking=stacking))


@pytest.mark.parametrize("method", list(EnsembleMethod))
def test_merged_graph_equals_the_separate_heads_and_the_numpy_rule(bundle_path, method):
    manifest = _with_rule(Bundle.open(bundle_path).manifest, method)
    heads = [(m, onnx.load(str(bundle_path / m.graphs["fp32"].file))) for m in manifest.members]
    merged = compose_heads(heads, method=method.value, stacking=manifest.ensemble.stacking_model,
                           classes=len(manifest.labels))
    sess = create_session(merged.SerializeToString())
    assert [o.name for o in sess.get_outputs()] == [ENSEMBLE_OUTPUT, *(member_output(m.name) for m in manifest.members)]
    separate = {m.name: create_session(bundle_path / m.graphs["fp32"].file) for m in manifest.members}
    for case in _cases(manifest):
        logits = {m.name: separate[m.name].run(None, {n: case[n] for n in m.inputs})[0] for m in manifest.members}
        want = ensemble_prediction(logits, manifest.members, method=method, labels=manifest.labels, backend="ort",
                                   precision="fp32", stacking=manifest.ensemble.stacking_model)
        got = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {i.name: case[i.name] for i in sess.get_inputs()})))
        np.testing.assert_allclose(got[ENSEMBLE_OUTPUT], want.probabilities, atol=MERGED_ATOL, rtol=0)
        for m in manifest.members:
            np.testing.assert_allclose(got[member_output(m.name)], want.member_probabilities[m.name], atol=MERGED_ATOL,
                                       rtol=0)


def test_each_head_graph_is_kept_as_built(bundle_path, tmp_path):
    """An fp16 head (Casts, float16 weights) goes in unchanged: its nodes, under the member's prefix."""
    from mmedge.export.quantization import policy

    manifest = Bundle.open(bundle_path).manifest
    first = manifest.members[0]
    half = tmp_path / "half.onnx"
    policy("fp16").build(bundle_path / first.graphs["fp32"].file, half, calib=[], model_type="head")
    heads = [(first, onnx.load(str(half))), *((m, onnx.load(str(bundle_path / m.graphs["fp32"].file)))
                                               for m in manifest.members[1:])]
    merged = compose_heads(heads, method="weighted_mean", stacking=None, classes=len(manifest.labels))
    for member, graph in heads:
        inside = collections.Counter(n.op_type for n in merged.graph.node if n.name.startswith(f"{member.name}/"))
        assert inside == collections.Counter(n.op_type for n in graph.graph.node)
    halves = {i.name for i in merged.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert halves and all(n.startswith(f"{first.name}/") for n in halves)


@pytest.fixture(scope="module")
def merged_bundle(bundle_path, tmp_path_factory):
    """The fixture bundle re-written with its merged heads graph (stacking, to exercise the hardest rule)."""
    work = tmp_path_factory.mktemp("merged-work")
    manifest = _with_rule(Bundle.open(bundle_path).manifest, EnsembleMethod.STACKING)
    for rel in manifest.files:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes((bundle_path / rel).read_bytes())
    merged = with_heads_graphs(manifest, work, _cases(manifest))
    files = {e.file: work / e.file for _, graphs in merged.graph_owners() for e in graphs.values()}
    files["tokenizer.json"] = work / "tokenizer.json"
    old = tmp_path_factory.mktemp("old") / "b"
    write_bundle(old, manifest, {k: v for k, v in files.items() if not k.startswith("ensemble/")})
    return write_bundle(tmp_path_factory.mktemp("merged") / "b", merged, files), old


def test_the_manifest_records_the_merged_graph_and_its_parity(merged_bundle):
    new, _ = merged_bundle
    on_disk = json.loads((new / "manifest.json").read_text())
    entry = on_disk["ensemble"]["graphs"]["fp32"]
    assert entry["file"] in on_disk["files"] and entry["parity"]["max_abs_diff"] <= MERGED_ATOL
    assert entry["quantization"]["rule"] == "stacking"
    assert set(entry["quantization"]["composed_from"]) == {"concat", "cross_attention"}
    assert "heads" in Bundle.open(new).components()


def test_session_runs_the_merged_graph_as_one_runner_and_predicts_the_same(merged_bundle, rng):
    new, old = merged_bundle
    images = (rng.random((3, 64, 64, 3)) * 255).astype(np.uint8)
    audio = [rng.normal(0, 0.1, 16000).astype(np.float32) for _ in range(3)]
    with Session(new, backend="ort", threads=2) as merged, Session(old, backend="ort", threads=2) as separate:
        assert HEADS in merged._runners and HEADS not in separate._runners
        got = merged.predict(image=images, text=TEXTS, audio=audio, audio_rate=16000)
        want = separate.predict(image=images, text=TEXTS, audio=audio, audio_rate=16000)
        assert HEADS in got.timings_ms and not any(k.startswith("head.") for k in got.timings_ms)
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=MERGED_ATOL, rtol=0)
        for name in want.member_probabilities:
            np.testing.assert_allclose(got.member_probabilities[name], want.member_probabilities[name],
                                       atol=MERGED_ATOL, rtol=0)
        assert got.labels == want.labels and got.members == want.members
        assert not any(c.startswith("head.") for c in merged._runners)  # loaded at the first call needing them
        partial = merged.predict(image=images, text=TEXTS)  # audio is optional: the separate heads run
        assert partial.skipped_members == ("cross_attention",) and HEADS not in partial.timings_ms
        assert "head.concat" in merged._runners and "head.concat" in merged.backends
        np.testing.assert_allclose(partial.probabilities, separate.predict(image=images, text=TEXTS).probabilities,
                                   atol=1e-6)


def test_a_session_of_some_members_runs_their_own_heads(merged_bundle):
    new, _ = merged_bundle
    with Session(new, backend="ort", threads=2, members=["concat"]) as single:
        assert HEADS not in single._runners and "head.concat" in single._runners


def test_a_merged_graph_that_lacks_a_member_output_is_a_bundle_error(merged_bundle, tmp_path, tools):
    new, _ = merged_bundle
    folder = tools.clone(new, tmp_path / "b")

    def edit(m):
        m["members"][1]["name"] = "renamed"
        m["metrics"] = {}
    tools.edit_manifest(folder, edit)
    with pytest.raises(BundleError, match="lacks outputs"):
        Session(folder, backend="ort")


def test_the_cost_benchmark_strips_the_merged_graph_into_an_older_bundle(merged_bundle, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from ensemble_cost import separate_heads_copy  # benchmarks/ensemble_cost.py

    new, _ = merged_bundle
    older = separate_heads_copy(new, tmp_path / "older")
    assert Bundle.open(older).manifest.ensemble.graphs is None and not (older / "ensemble").exists()
    with Session(older, backend="ort", threads=2) as s:
        assert HEADS not in s._runners and {f"head.{m.name}" for m in s.bundle.members} <= set(s._runners)
