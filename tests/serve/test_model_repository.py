"""``mmedge triton``: the generated repository parses as Triton's ModelConfig, is wired right, and runs on a real Triton."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="the serve tests run in their own environment: .ci/serve_tests.sh")
from google.protobuf import text_format  # noqa: E402

from mmedge.errors import ConfigError  # noqa: E402
from mmedge.serve.model_repository import RepositoryConfig, write_repository  # noqa: E402


def _configs(repo):
    out = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        out[path.parent.name] = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return out


@pytest.fixture(scope="module")
def repo(bundle_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    models = write_repository(bundle_path, out, RepositoryConfig(max_batch=8, instances=2, queue_delay_us=100,
                                                                 max_queue=32, queue_timeout_us=50_000))
    return out, models


def test_every_config_parses_and_names_its_folder(repo):
    out, models = repo
    configs = _configs(out)
    assert sorted(configs) == sorted(m.name for m in models)
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 8 and (out / name / "1").is_dir()
    assert {n for n, c in configs.items() if c.platform == "onnxruntime_onnx"} == {  # the full ensemble runs every
        "mmedge.encoder.image", "mmedge.encoder.text", "mmedge.encoder.audio",  # head as one graph; without audio,
        "mmedge.heads", "mmedge.head.concat"}  # concat runs alone (cross_attention reads audio)
    graph = configs["mmedge.encoder.image"]
    assert graph.instance_group[0].count == 2 and graph.dynamic_batching.max_queue_delay_microseconds == 100
    policy = configs["mmedge.preprocess.text"].dynamic_batching.default_queue_policy  # bounded, overflow REJECTED
    assert policy.max_queue_size == 32 and policy.default_timeout_microseconds == 50_000
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert (out / "mmedge.encoder.image" / "1" / "model.onnx").is_file()
    assert (out / "mmedge.preprocess.text" / "1" / "tokenizer.json").is_file()
    assert configs["mmedge.preprocess.image"].backend == "python"


def test_the_served_model_config_parses_with_a_bounded_queue(bundle_path, tmp_path):
    from mmedge.runtime import Bundle
    from mmedge.serve.serve_config import ServeConfig
    from mmedge.serve.serve_repository import write_serve_repository

    with Bundle.open(bundle_path) as bundle:
        write_serve_repository(bundle, tmp_path, ServeConfig(max_batch=16, max_queue=48, instances=2), threads=1)
        write_serve_repository(bundle, tmp_path / "off", ServeConfig(batching=False, model_name="x"), threads=1)
    config = _configs(tmp_path)["mmedge"]
    assert config.backend == "python" and config.max_batch_size == 16 and config.instance_group[0].count == 2
    assert all(i.optional for i in config.input) and [i.name for i in config.input][:2] == ["image", "text"]
    policy = config.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 48 and policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert config.parameters["step"].string_value == "bundle" and (tmp_path / "mmedge" / "1" / "model.py").is_file()
    assert not _configs(tmp_path / "off")["x"].HasField("dynamic_batching")


def test_ensembles_wire_every_step(repo):
    out, _ = repo
    configs = _configs(out)
    full, partial = configs["mmedge"], configs["mmedge.without-audio"]
    assert full.platform == "ensemble" and [i.name for i in full.input] == ["image", "text", "audio", "audio_rate"]
    assert [i.name for i in partial.input] == ["image", "text"]
    assert [o.name for o in full.output] == ["probabilities", "member_probabilities", "index", "label", "meta"]
    for ensemble in (full, partial):
        produced = {i.name for i in ensemble.input}
        for step in ensemble.ensemble_scheduling.step:
            assert step.model_name in configs  # every step is a model of the repository
            model_inputs = {i.name for i in configs[step.model_name].input}
            assert set(step.input_map) == model_inputs and set(step.input_map.values()) <= produced
            produced |= set(step.output_map.values())
        assert {o.name for o in ensemble.output} <= produced
    steps = [s.model_name for s in partial.ensemble_scheduling.step]
    assert "mmedge.encoder.audio" not in steps and steps[-1] == "mmedge.combine.without-audio"
    params = configs["mmedge.combine.without-audio"].parameters
    assert [m["name"] for m in json.loads(params["members"].string_value)] == ["concat"]


def _fake_build(bundle_path, root, key, capability, max_rows=16, sha=None):
    """Engine files as `mmedge build` lays them out (their bytes are not run here)."""
    from mmedge.runtime import Bundle

    with Bundle.open(bundle_path) as bundle:
        for component in bundle.components():
            graph = bundle.graph_path(component, "fp32").relative_to(bundle.root)
            folder = root / key / graph.parent
            folder.mkdir(parents=True, exist_ok=True)
            (folder / (graph.stem + ".engine")).write_bytes(b"plan " + key.encode())
            record = {"compute_capability": capability, "tensorrt": "10.3.0",
                      "source_sha256": sha or bundle.graph_entry(component, "fp32").sha256,
                      "profiles": {"x": {"min": [1], "opt": [4], "max": [max_rows]}}}
            (folder / (graph.stem + ".engine.json")).write_text(json.dumps(record))


def test_engines_become_tensorrt_plans(bundle_path, tmp_path):
    bundle = Path(shutil.copytree(bundle_path, tmp_path / "bundle"))  # engines: <bundle>/engines/<device key>
    _fake_build(bundle, bundle / "engines", "trt10.3.0_orin_sm87", "8.7")
    _fake_build(bundle, bundle / "engines", "trt10.3.0_l4_sm89", "8.9")
    write_repository(bundle, tmp_path / "both", RepositoryConfig(max_batch=8))
    head = _configs(tmp_path / "both")["mmedge.head.concat"]
    assert head.platform == "tensorrt_plan" and head.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert dict(head.cc_model_filenames) == {"8.7": "model.8.7.plan", "8.9": "model.8.9.plan"}
    assert (tmp_path / "both" / "mmedge.head.concat" / "1" / "model.8.9.plan").read_bytes() == b"plan trt10.3.0_l4_sm89"
    one = RepositoryConfig(engine_dir=bundle / "engines" / "trt10.3.0_orin_sm87")
    write_repository(bundle, tmp_path / "one", one)
    assert _configs(tmp_path / "one")["mmedge.encoder.text"].default_model_filename == "model.plan"
    write_repository(bundle, tmp_path / "plain", RepositoryConfig(engines=False))
    assert _configs(tmp_path / "plain")["mmedge.encoder.text"].platform == "onnxruntime_onnx"


def test_engine_problems_are_named(bundle_path, tmp_path):
    _fake_build(bundle_path, tmp_path / "small", "k", "8.7", max_rows=4)
    with pytest.raises(ConfigError, match="takes at most 4 rows"):
        write_repository(bundle_path, tmp_path / "r1", RepositoryConfig(engine_dir=tmp_path / "small" / "k"))
    _fake_build(bundle_path, tmp_path / "stale", "k", "8.7", sha="0" * 64)  # built from another graph: ignored
    write_repository(bundle_path, tmp_path / "r2", RepositoryConfig(engine_dir=tmp_path / "stale" / "k"))
    assert _configs(tmp_path / "r2")["mmedge.head.concat"].platform == "onnxruntime_onnx"
    with pytest.raises(ConfigError, match="not a folder"):
        write_repository(bundle_path, tmp_path / "r3", RepositoryConfig(engine_dir=tmp_path / "missing"))


def test_repository_runs_on_a_real_triton(bundle_path, samples, tmp_path):
    """The python-graph variant runs on PyTriton's tritonserver (Python backend only) and predicts as in-process."""
    pytest.importorskip("pytriton")
    import tritonclient.http as tc
    from conftest import free_ports
    from pytriton.triton import Triton, TritonConfig

    from mmedge.client import Client
    from mmedge.runtime import Session
    from mmedge.serve.server import prepare_environment

    repo = tmp_path / "repo"
    write_repository(bundle_path, repo, RepositoryConfig(graph_backend="python", max_batch=4, queue_delay_us=0))
    prepare_environment()
    http, grpc, metrics = free_ports(3)
    config = TritonConfig(model_repository=repo, http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1",
                          grpc_port=grpc, metrics_address="127.0.0.1", metrics_port=metrics, exit_timeout_secs=5)
    rows = dict(image=samples["images"][:6], text=samples["texts"][:6], audio=samples["audio"][:6],
                audio_rate=samples["audio_rate"])
    with Triton(config=config, workspace=tmp_path / "ws"), Session(bundle_path, threads=1) as local:
        for model, given in (("mmedge", rows), ("mmedge.without-audio", {k: rows[k] for k in ("image", "text")})):
            with Client(f"http://127.0.0.1:{http}", model=model) as client:
                client.wait_ready(60)
                remote, here = client.predict(**given), local.predict(**given)
                assert remote.labels == here.labels and remote.members == here.members
                np.testing.assert_allclose(remote.probabilities, here.probabilities, atol=1e-5, rtol=0)
        with tc.InferenceServerClient(f"127.0.0.1:{http}") as raw:
            inputs = [tc.InferInput("image", [1, 8, 8, 3], "UINT8"), tc.InferInput("text", [1, 1], "BYTES")]
            inputs[0].set_data_from_numpy(np.zeros((1, 8, 8, 3), np.uint8))
            inputs[1].set_data_from_numpy(np.array([[b"  "]], dtype=object))
            with pytest.raises(tc.InferenceServerException) as info:
                raw.infer("mmedge.without-audio", inputs)
            assert info.value.status() == "400" and "empty or whitespace" in info.value.message()
        _mixed_clients(f"127.0.0.1:{http}", rows, local)
    assert not (tmp_path / "ws").exists()


def _mixed_clients(address, rows, local):
    """Good and whitespace-text requests at once: each bad one refused (400) with its message, the good answered."""
    import threading

    import tritonclient.http as tc

    from mmedge.client import Client

    given = {k: rows[k] for k in ("image", "text")}
    good, bad = [], []

    def good_client():
        with Client(f"http://{address}", model="mmedge.without-audio") as client:
            good.extend(client.predict(image=given["image"][i], text=given["text"][i]).labels[0] for i in range(4))

    def bad_client():
        with tc.InferenceServerClient(address) as raw:
            for _ in range(4):
                inputs = [tc.InferInput("image", [1, 32, 32, 3], "UINT8"), tc.InferInput("text", [1, 1], "BYTES")]
                inputs[0].set_data_from_numpy(given["image"][0][None])
                inputs[1].set_data_from_numpy(np.array([[b"   "]], dtype=object))
                try:
                    raw.infer("mmedge.without-audio", inputs)
                except tc.InferenceServerException as exc:
                    bad.append((exc.status(), exc.message()))

    threads = [threading.Thread(target=f) for f in (good_client, good_client, bad_client, bad_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert good == local.predict(image=given["image"][:4], text=given["text"][:4]).labels * 2
    assert len(bad) == 8 and all(status == "400" and "empty or whitespace" in m for status, m in bad)


def test_a_waveform_front_end_bundle_runs_as_a_repository(serve_fixture, samples, tmp_path):
    """The wav2vec2 bundle's preprocess step feeds ``waveform`` (the name from its spec) on a real Triton."""
    pytest.importorskip("pytriton")
    bundle = serve_fixture / "waveform-bundle" if serve_fixture is not None else None
    if bundle is None or not bundle.is_dir():
        pytest.skip("the waveform bundle is built by tests/serve/make_fixture.py (.ci/serve_tests.sh)")
    from conftest import free_ports
    from pytriton.triton import Triton, TritonConfig

    from mmedge.client import Client
    from mmedge.runtime import Session
    from mmedge.serve.server import prepare_environment

    repo = tmp_path / "repo"
    write_repository(bundle, repo, RepositoryConfig(graph_backend="python", max_batch=4, queue_delay_us=0))
    assert "waveform" in (repo / "mmedge.preprocess.audio" / "config.pbtxt").read_text()
    prepare_environment()
    http, grpc, metrics = free_ports(3)
    config = TritonConfig(model_repository=repo, http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1",
                          grpc_port=grpc, metrics_address="127.0.0.1", metrics_port=metrics, exit_timeout_secs=5)
    rng = np.random.default_rng(4)
    rows = dict(image=samples["images"][:3], audio=[rng.standard_normal(12000).astype(np.float32) * 0.2] * 3,
                audio_rate=16000)
    with Triton(config=config, workspace=tmp_path / "ws"), Session(bundle, threads=1) as local:
        with Client(f"http://127.0.0.1:{http}") as client:
            client.wait_ready(60)
            remote, here = client.predict(**rows), local.predict(**rows)
    assert remote.labels == here.labels
    np.testing.assert_allclose(remote.probabilities, here.probabilities, atol=1e-5, rtol=0)
