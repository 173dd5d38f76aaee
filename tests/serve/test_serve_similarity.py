"""Similarity bundles (a tiny CLIP exported as itself) serve: the image scored against free texts sent as
``queries``, through ``mmedge serve``'s handler and server and through an ``mmedge triton`` repository (its steps
in-process, then on a real Triton), each agreeing with ``Session.similarity``; bad queries are refused per request."""
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serve tests run in their own environment: "
                                                                 ".ci/serve_tests.sh")
from conftest import free_ports  # noqa: E402  (tests/serve/conftest.py)
from repo_runner import configs, run_model  # noqa: E402

from mmedge.errors import InputError  # noqa: E402
from mmedge.runtime import Session  # noqa: E402
from mmedge.serve.handler import BundleHandler  # noqa: E402
from mmedge.serve.model_repository import RepositoryConfig, write_repository  # noqa: E402

QUERIES = ["a photo of a cat", "a red car", "Café crème — déjà vu?", "two dogs"]


@pytest.fixture(scope="module")
def clip_bundle(serve_fixture):
    bundle = serve_fixture / "clip-bundle" if serve_fixture is not None else None
    if bundle is None or not bundle.is_dir():
        pytest.skip("the CLIP bundle is built by tests/serve/make_fixture.py (.ci/serve_tests.sh)")
    return bundle


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]


def _queries(rows, queries=QUERIES):
    return np.array([[q.encode() for q in queries]] * rows, dtype=object)


def test_the_handler_scores_queries_and_refuses_each_bad_request_alone(clip_bundle, bundle_path, images):
    with Session(clip_bundle, threads=1) as session:
        want = session.similarity(image=images, text=QUERIES)
        probs = session.similarity(image=images, text=QUERIES, probabilities=True)
        handler = BundleHandler(session)
        answers = handler.answer([
            {"image": np.stack(images[:2]), "queries": _queries(2)},
            {"image": np.stack(images[2:]), "queries": _queries(1, ["a cat", "   "])},  # a blank query
            {"image": np.stack(images[2:]), "queries": _queries(1)},
            {"image": np.stack(images[:2])},  # a plain prediction beside them (the zero-shot member)
            {"image": np.stack(images[:1]), "queries": _queries(1), "text": np.array([[b"x"]], dtype=object)}])
        pred = session.predict(image=images[:2])
    np.testing.assert_allclose(np.concatenate([answers[0]["scores"], answers[2]["scores"]]), want, atol=1e-5)
    np.testing.assert_allclose(answers[0]["query_probabilities"], probs[:2], atol=1e-5)
    assert [v.decode() for v in answers[0]["label"][:, 0]] == [QUERIES[i] for i in want[:2].argmax(1)]
    assert isinstance(answers[1], InputError) and "queries [1] are empty" in str(answers[1])
    np.testing.assert_allclose(answers[3]["probabilities"], pred.probabilities, atol=1e-5)
    assert isinstance(answers[4], InputError) and "not both" in str(answers[4])
    with Session(bundle_path, threads=1) as plain:  # no similarity record: the request is refused, with why
        refused = BundleHandler(plain).answer([{"image": np.stack(images[:1]), "queries": _queries(1)}])[0]
    assert isinstance(refused, InputError) and "has no similarity" in str(refused)


def test_the_repository_similarity_steps_score_as_the_session(clip_bundle, images, tmp_path):
    repo = tmp_path / "repo"
    names = [m.name for m in write_repository(clip_bundle, repo, RepositoryConfig(graph_backend="python",
                                                                                  max_batch=2))]
    assert {"mmedge.similarity", "mmedge.similarity.text", "mmedge.similarity.score",
            "mmedge.encoder.text", "mmedge.preprocess.text"} <= set(names)
    assert [i.name for i in configs(repo)["mmedge.similarity"].input] == ["image", "queries"]
    with Session(clip_bundle, threads=1) as session:
        want = session.similarity(image=images, text=QUERIES)  # 4 queries: two text calls of max_batch 2
    out = run_model(repo, "mmedge.similarity", {"image": np.stack(images), "queries": _queries(3)})
    np.testing.assert_allclose(out["scores"], want, atol=1e-4)
    assert out["index"][:, 0].tolist() == want.argmax(1).tolist()


def _triton(repo, tmp_path):
    from pytriton.triton import Triton, TritonConfig

    from mmedge.serve.server import prepare_environment

    prepare_environment()
    http, grpc, metrics = free_ports(3)
    config = TritonConfig(model_repository=repo, http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1",
                          grpc_port=grpc, metrics_address="127.0.0.1", metrics_port=metrics, exit_timeout_secs=5)
    return Triton(config=config, workspace=tmp_path / "ws"), http


def test_served_similarity_matches_the_session(clip_bundle, images, tmp_path):
    """``mmedge serve`` (its one model takes ``queries``) and a repository on a real Triton (``.similarity``,
    the queries encoded by business-logic scripting) answer ``Client.similarity`` as ``Session.similarity``."""
    pytest.importorskip("pytriton")
    from mmedge.client import Client, RequestRefused
    from mmedge.serve.serve_config import ServeConfig
    from mmedge.serve.server import Server

    with Session(clip_bundle, threads=1) as local:
        want = local.similarity(image=images, text=QUERIES)
        probs = local.similarity(image=images, text=QUERIES, probabilities=True)
    http, grpc, metrics = free_ports(3)
    with Server(clip_bundle, ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, threads=1,
                                         max_batch=4)) as server:
        for url in (server.http_url, server.grpc_url):
            with Client(url) as client:
                np.testing.assert_allclose(client.similarity(image=images, text=QUERIES), want, atol=1e-5)
                np.testing.assert_allclose(client.similarity(image=images, text=QUERIES, probabilities=True),
                                           probs, atol=1e-5)
                with pytest.raises(RequestRefused, match="queries"):
                    client._infer(client.model, {"image": images[:1]}, ("scores",), ["ok", "  "])
    repo = tmp_path / "repo"
    write_repository(clip_bundle, repo, RepositoryConfig(graph_backend="python", max_batch=2, queue_delay_us=0))
    triton, port = _triton(repo, tmp_path)
    with triton, Client(f"http://127.0.0.1:{port}") as client:
        client.wait_ready(60)
        np.testing.assert_allclose(client.similarity(image=images, text=QUERIES), want, atol=1e-4)
