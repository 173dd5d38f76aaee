"""End to end: a real Triton server (PyTriton) on loopback serving the fixture bundle.

Requests are rows of the reference ``digits-av`` test split; answers must match the in-process
runtime (labels equal, probabilities within 1e-5) over HTTP and gRPC; malformed requests get
clear errors while the server keeps serving; the server stops cleanly and leaves no workspace.
"""
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="the serve tests run in their own environment: .ci/serve_tests.sh")
tritonclient_http = pytest.importorskip("tritonclient.http")

from conftest import free_ports  # noqa: E402  (tests/serve/conftest.py)

from mmedge.client import Client, RequestRefused, ServerError  # noqa: E402
from mmedge.errors import InputError  # noqa: E402
from mmedge.runtime import Session  # noqa: E402
from mmedge.serve.serve_config import ServeConfig  # noqa: E402
from mmedge.serve.protocol import WireLimits  # noqa: E402
from mmedge.serve.server import Server, workspace_root  # noqa: E402


@pytest.fixture(scope="module")
def server(bundle_path):
    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=8, threads=1,
                         queue_delay_us=5000, limits=WireLimits(max_image_side=512))
    with Server(bundle_path, config) as s:
        yield s
    assert not s.workspace.parent.exists()


@pytest.fixture(scope="module")
def local(bundle_path):
    with Session(bundle_path, threads=1) as s:
        yield s


def _check_same(remote, local_pred):
    assert remote.labels == local_pred.labels
    np.testing.assert_allclose(remote.probabilities, local_pred.probabilities, atol=1e-5, rtol=0)
    assert set(remote.member_probabilities) == set(local_pred.member_probabilities)
    for name, probs in local_pred.member_probabilities.items():
        np.testing.assert_allclose(remote.member_probabilities[name], probs, atol=1e-5, rtol=0)
    assert remote.members == local_pred.members and remote.note == local_pred.note


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_reference_rows_match_the_in_process_runtime(server, local, samples, scheme):
    url = server.http_url if scheme == "http" else server.grpc_url
    rows = dict(image=samples["images"][:6], text=samples["texts"][:6], audio=samples["audio"][:6],
                audio_rate=samples["audio_rate"])
    with Client(url) as client:
        assert client.ready()
        _check_same(client.predict(**rows), local.predict(**rows))
        two = dict(image=samples["images"][6:8], text=samples["texts"][6:8])  # optional audio left out
        _check_same(client.predict(**two), local.predict(**two))
        big = dict(image=samples["images"][:12], text=samples["texts"][:12])  # > max_batch: two requests
        _check_same(client.predict(**big), local.predict(**big))


def test_concurrent_requests_are_batched_and_answered_right(server, local, samples):
    results, errors = {}, []

    def worker(i):
        try:
            with Client(server.grpc_url) as client:  # one client per thread
                results[i] = client.predict(image=samples["images"][i], text=samples["texts"][i])
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 8
    for i, pred in results.items():
        _check_same(pred, local.predict(image=samples["images"][i], text=samples["texts"][i]))
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="mmedge"' in text
    assert "nv_inference_exec_count" in text


def _raw(client, inputs):
    tc = tritonclient_http
    made = []
    for name, array, dtype in inputs:
        inp = tc.InferInput(name, list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        made.append(inp)
    return client.infer("mmedge", made)


# Triton itself refuses what the model config rules out (HTTP 400 / gRPC INVALID_ARGUMENT); the
# mmedge handler refuses the rest (limits, content) per request with the runtime's InputError, which
# the model answers as INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT too, its message intact.
TEXT, IMAGE8 = ("text", np.array([[b"a"]], dtype=object), "BYTES"), ("image", np.zeros((1, 8, 8, 3), np.uint8), "UINT8")
BAD = [
    ("wrong name", [("picture", np.zeros((1, 8, 8, 3), np.uint8), "UINT8")], "400", "unexpected inference input 'picture'"),
    ("wrong dtype", [("image", np.zeros((1, 8, 8, 3), np.float32), "FP32")], "400", "data-type is 'FP32'"),
    ("wrong shape", [("image", np.zeros((1, 8, 8, 4), np.uint8), "UINT8")], "400", "unexpected shape for input 'image'"),
    ("batch too big", [("text", np.array([[b"a"]] * 9, dtype=object), "BYTES")], "400", "batch-size must be <= 8"),
    ("image too big", [("image", np.zeros((1, 600, 8, 3), np.uint8), "UINT8"), TEXT], "400", "at most 512 pixels"),
    ("text too long", [IMAGE8, ("text", np.array([[b"a" * 5000]], dtype=object), "BYTES")], "400", "at most 4096"),
    ("bad utf-8", [IMAGE8, ("text", np.array([[b"\xff"]], dtype=object), "BYTES")], "400", "not valid UTF-8"),
    ("no rate", [IMAGE8, TEXT, ("audio", np.zeros((1, 100), np.float32), "FP32")], "400", "needs 'audio_rate'"),
    ("missing modality", [TEXT], "400", "needs ['image'] as well"),
]


@pytest.mark.parametrize("inputs, status, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(server, samples, inputs, status, words):
    tc = tritonclient_http
    with tc.InferenceServerClient(server.http_url[len("http://"):]) as raw:
        with pytest.raises(tc.InferenceServerException) as info:
            _raw(raw, inputs)
        assert info.value.status() == status and words in info.value.message()
    with Client(server.http_url) as client:  # still serving
        assert client.predict(image=samples["images"][0], text=samples["texts"][0]).labels


def test_client_errors(server):
    for url in (server.http_url, server.grpc_url):
        with Client(url) as client, pytest.raises(RequestRefused, match="needs \\['image'\\]") as info:
            client.predict(text="only text")
        assert isinstance(info.value, InputError) and isinstance(info.value, ServerError)
    with Client(server.http_url, model="nope") as client, pytest.raises(ServerError, match="nope"):
        client.predict(text="a")
    with Client(f"http://127.0.0.1:{free_ports(1)[0]}", timeout_s=2) as client:
        assert not client.ready()
        with pytest.raises(ServerError):
            client.predict(text="a", image=np.zeros((8, 8, 3), np.uint8))


def test_health_endpoints(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mmedge/ready"):
        assert urllib.request.urlopen(server.http_url + path, timeout=10).status == 200
    assert workspace_root() in server.workspace.parents


def test_two_instances_without_dynamic_batching(bundle_path, local, samples):
    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, instances=2, batching=False,
                         max_batch=4, threads=1, model_name="digits")
    with Server(bundle_path, config) as server:
        with tritonclient_http.InferenceServerClient(f"127.0.0.1:{http}") as raw:
            model = raw.get_model_config("digits")
        assert model["instance_group"][0]["count"] == 2 and "dynamic_batching" not in model
        assert model["max_batch_size"] == 4
        rows = dict(image=samples["images"][:6], text=samples["texts"][:6])  # 6 rows > 4: the client splits
        with Client(server.grpc_url, model="digits") as client:
            _check_same(client.predict(**rows), local.predict(**rows))
    assert not server.workspace.parent.exists() and not server.is_alive()


def test_mixed_image_sizes_and_sources(server, local, samples, tmp_path):
    """Images of other sizes go in separate requests; files are decoded by the client; BGR frames flipped."""
    import cv2

    path = tmp_path / "digit.png"
    cv2.imwrite(str(path), cv2.cvtColor(samples["images"][2], cv2.COLOR_RGB2BGR))
    frame = np.ascontiguousarray(cv2.resize(samples["images"][1], (40, 24))[..., ::-1])  # a BGR camera frame
    rows = dict(image=[np.ascontiguousarray(samples["images"][0][..., ::-1]), frame, str(path)],
                text=samples["texts"][:3], image_color_order="BGR")
    with Client(server.http_url) as client:
        remote = client.predict(**rows)
    assert len(remote.labels) == 3
    _check_same(remote, local.predict(**rows))


def test_only_pytritons_handshake_race_is_retried():
    from mmedge.serve.server import _is_handshake_race

    race = RuntimeError("[400] load failed for model 'digits': Model initialize error: ... "
                        "get_config_from_handshake_server(handshake_socket) ... "
                        "ConnectionRefusedError: [Errno 111] Connection refused")
    assert _is_handshake_race(race)
    assert not _is_handshake_race(RuntimeError("[400] load failed for model 'digits': out of memory"))
    assert not _is_handshake_race(ConnectionRefusedError("[Errno 111] Connection refused"))


def test_a_start_that_hits_the_handshake_race_starts_again_in_a_fresh_workspace(bundle_path, local, samples,
                                                                                monkeypatch):
    """The race itself is rare; here the first start runs Triton for real and then fails with its message."""
    real_start, workspaces = Server._start_triton, []

    def start_then_race_once(self, *args):
        real_start(self, *args)
        workspaces.append(self.workspace)
        if len(workspaces) == 1:
            raise RuntimeError("load failed: get_config_from_handshake_server ... [Errno 111] Connection refused")

    monkeypatch.setattr(Server, "_start_triton", start_then_race_once)
    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, instances=2, threads=1)
    with Server(bundle_path, config) as server:
        assert len(workspaces) == 2 and not workspaces[0].parent.exists() and server.workspace == workspaces[1]
        rows = dict(image=samples["images"][:2], text=samples["texts"][:2])
        with Client(server.http_url) as client:
            _check_same(client.predict(**rows), local.predict(**rows))
    assert not server.workspace.parent.exists() and not server.is_alive()


def _exec_count(server) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    lines = [line for line in text.splitlines() if line.startswith("nv_inference_exec_count{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_bad_clients_never_fail_good_ones_in_the_same_dynamic_batch(server, local, samples):
    """6 good clients and 2 sending whitespace-only text with the same shapes, concurrently over gRPC: dynamic
    batches mix them, yet every good request is answered right and every bad one refused with its message."""
    import tritonclient.grpc as tcg

    good, bad, start_execs = {}, [], _exec_count(server)

    def good_client(c):
        with Client(server.grpc_url) as client:
            for k in range(5):
                i = (c + k) % len(samples["texts"])
                good[(c, k)] = (i, client.predict(image=samples["images"][i], text=samples["texts"][i]))

    def bad_client(c):
        with tcg.InferenceServerClient(server.grpc_url[len("grpc://"):]) as raw:
            for k in range(5):
                inputs = [tcg.InferInput("image", [1, 32, 32, 3], "UINT8"), tcg.InferInput("text", [1, 1], "BYTES")]
                inputs[0].set_data_from_numpy(samples["images"][c][None])
                inputs[1].set_data_from_numpy(np.array([[b" \t "]], dtype=object))
                try:
                    raw.infer("mmedge", inputs)
                    bad.append("answered")
                except tcg.InferenceServerException as exc:
                    bad.append(f"{exc.status()} {exc.message()}")

    threads = [threading.Thread(target=good_client, args=(c,)) for c in range(6)]
    threads += [threading.Thread(target=bad_client, args=(c,)) for c in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(good) == 30 and len(bad) == 10
    assert all(b.startswith("StatusCode.INVALID_ARGUMENT") and "empty or whitespace" in b for b in bad), bad[:2]
    for i, pred in good.values():
        _check_same(pred, local.predict(image=samples["images"][i], text=samples["texts"][i]))
    assert _exec_count(server) - start_execs < 40  # requests were batched together, good with bad


def test_requests_beyond_the_queue_are_refused_at_once(bundle_path, samples):
    """A burst far over a tiny queue: the overflow is refused with UNAVAILABLE (the client's ServerBusy), the
    rest answered; nothing times out."""
    import time

    import tritonclient.grpc as tcg

    from mmedge.client import _STATUS_ERRORS, ServerBusy

    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=1, max_queue=2,
                         queue_delay_us=0, threads=1)
    outcomes, done = [], threading.Semaphore(0)
    with Server(bundle_path, config) as server, tcg.InferenceServerClient(f"127.0.0.1:{grpc}") as raw:
        assert server.model_ready()
        for i in range(40):
            inputs = [tcg.InferInput("image", [1, 32, 32, 3], "UINT8"), tcg.InferInput("text", [1, 1], "BYTES")]
            inputs[0].set_data_from_numpy(samples["images"][i % 12][None])
            inputs[1].set_data_from_numpy(np.array([[samples["texts"][i % 12].encode()]], dtype=object))

            def callback(result, error, start=time.perf_counter()):
                outcomes.append((error, time.perf_counter() - start))
                done.release()

            raw.async_infer("mmedge", inputs, callback=callback, client_timeout=60)
        assert all(done.acquire(timeout=60) for _ in range(40))
    busy = [e for e, _ in outcomes if e is not None]
    assert len(busy) >= 10 and len(outcomes) == 40
    assert all(str(e.status()) == "StatusCode.UNAVAILABLE" and "queue" in e.message() for e in busy), busy[0]
    assert _STATUS_ERRORS[str(busy[0].status())] is ServerBusy


def test_a_model_that_cannot_load_is_a_prompt_error(bundle_path):
    """Triton exits when the model fails to load: the server says why at once instead of waiting for readiness."""
    import time

    from mmedge.errors import MmedgeError

    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, backend="tensorrt", threads=1)
    start = time.monotonic()
    with pytest.raises(MmedgeError, match="tensorrt|TensorRT") as info:
        Server(bundle_path, config).start()
    assert time.monotonic() - start < 90 and "exited while loading" in str(info.value)


def _listening(port):
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found


def test_binds_loopback_and_keeps_model_control_closed(server):
    assert server.config.host == "127.0.0.1"
    for port in (server.config.http_port, server.config.grpc_port, server.config.metrics_port):
        found = _listening(port)  # 127.0.0.1 (or ::ffff:127.0.0.1) only, never 0.0.0.0 / ::
        assert found and all(a in ("0100007F", "0000000000000000FFFF00000100007F") for a in found), found
    request = urllib.request.Request(f"{server.http_url}/v2/repository/models/mmedge/unload", data=b"{}",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    assert server.model_ready()  # still loaded and serving


def test_a_waveform_front_end_bundle_serves(serve_fixture, samples):
    """Image + a Hugging Face wav2vec2 (raw waveform in, graph input ``waveform``): served as in-process."""
    bundle = serve_fixture / "waveform-bundle" if serve_fixture is not None else None
    if bundle is None or not bundle.is_dir():
        pytest.skip("the waveform bundle is built by tests/serve/make_fixture.py (.ci/serve_tests.sh)")
    http, grpc, metrics = free_ports(3)
    config = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=4, threads=1)
    rng = np.random.default_rng(3)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.2 for n in (12000, 12000, 8000)]
    rows = dict(image=samples["images"][:3], audio=waves, audio_rate=16000)
    with Server(bundle, config) as server, Session(bundle, threads=1) as local:
        for url in (server.http_url, server.grpc_url):
            with Client(url) as client:
                _check_same(client.predict(**rows), local.predict(**rows))
