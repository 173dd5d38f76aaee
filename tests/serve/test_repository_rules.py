"""What an ``mmedge triton`` repository computes, step by step without a server: each ensemble's steps run in
order through ``steps.create_step`` from the written ``config.pbtxt`` files (the Python-graph variant), so the
repository's wiring and parameters are what is tested; a stacking bundle predicts as ``Session.predict``."""
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serve tests run in their own environment: "
                                                                 ".ci/serve_tests.sh")

from mmedge.runtime import Session  # noqa: E402
from mmedge.runtime.ensemble import Stacking  # noqa: E402
from mmedge.serve.model_repository import RepositoryConfig, write_repository  # noqa: E402
from repo_runner import run_model  # noqa: E402  (tests/serve/repo_runner.py)


def wire_rows(samples, count, audio=True):
    rows = {"image": np.stack(samples["images"][:count]),
            "text": np.array([[t.encode()] for t in samples["texts"][:count]], dtype=object)}
    if audio:
        rows.update(audio=np.stack(samples["audio"][:count]).astype(np.float32),
                    audio_rate=np.full((count, 1), samples["audio_rate"], np.int32))
    return rows


def test_a_stacking_ensemble_combines_as_the_session(bundle_path, samples, tools, tmp_path):
    """The combine step gets the manifest's stacking coefficients (it refused the rule before); the variant
    without audio, whose members the coefficients were not fit on, falls back to their weights as Session does."""
    folder = tools.clone(bundle_path, tmp_path / "stacked")
    with Session(folder, threads=1) as plain:
        members = len(plain.bundle.members)
    rng = np.random.default_rng(3)
    stacking = Stacking(rng.normal(0, 0.5, (10, members * 10)), rng.normal(0, 0.1, 10))
    tools.edit_manifest(folder, lambda m: m.update(ensemble={"method": "stacking", "stacking": stacking.to_dict()}))
    repo = tmp_path / "repo"
    write_repository(folder, repo, RepositoryConfig(graph_backend="python", max_batch=8))
    rows = wire_rows(samples, 5)
    with Session(folder, threads=1) as session:
        for model, given in (("mmedge", rows), ("mmedge.without-audio", {k: rows[k] for k in ("image", "text")})):
            out = run_model(repo, model, given)
            kwargs = {"image": list(given["image"]), "text": [t[0].decode() for t in given["text"]]}
            if "audio" in given:
                kwargs.update(audio=list(given["audio"]), audio_rate=samples["audio_rate"])
            want = session.predict(**kwargs)
            np.testing.assert_allclose(out["probabilities"], want.probabilities, atol=1e-5, rtol=0)
            assert [v.decode() for v in out["label"][:, 0]] == want.labels
            if model == "mmedge":  # all members ran: the coefficients combined them
                ran = np.stack([want.member_probabilities[m] for m in want.members])
                np.testing.assert_allclose(out["probabilities"], stacking.predict(ran), atol=1e-5, rtol=0)


def test_the_full_ensemble_runs_the_merged_heads_graph_and_predicts_as_the_session(bundle_path, samples, tmp_path):
    """Every member runs: one step for all heads and the rule (the bundle's merged graph, as Session runs it);
    the variant without audio runs some members, so its own heads."""
    repo = tmp_path / "repo"
    write_repository(bundle_path, repo, RepositoryConfig(graph_backend="python", max_batch=8))
    full = (repo / "mmedge" / "config.pbtxt").read_text()
    assert '"mmedge.heads"' in full and '"mmedge.head.' not in full
    assert '"mmedge.heads"' not in (repo / "mmedge.without-audio" / "config.pbtxt").read_text()
    rows = wire_rows(samples, 5)
    out = run_model(repo, "mmedge", rows)
    with Session(bundle_path, threads=1) as session:
        assert "heads" in session._runners
        want = session.predict(image=list(rows["image"]), text=[t[0].decode() for t in rows["text"]],
                               audio=list(rows["audio"]), audio_rate=samples["audio_rate"])
    np.testing.assert_allclose(out["probabilities"], want.probabilities, atol=1e-5, rtol=0)
    ran = np.stack([want.member_probabilities[m] for m in want.members], axis=1)
    np.testing.assert_allclose(out["member_probabilities"], ran, atol=1e-5, rtol=0)
    assert [v.decode() for v in out["label"][:, 0]] == want.labels
