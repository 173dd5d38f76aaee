"""``mmedge.client``: predict against a Triton server (``mmedge serve``, or a repository from ``mmedge triton``).

A thin layer over ``tritonclient``: the same arguments as ``Session.predict``, the same
``mmedge.runtime.Prediction`` back. Images given as files or encoded bytes are decoded here
(``mmedge.runtime.preprocess.load_image``) and sent as RGB pixels; audio files are read here.
Everything else (resize, normalization, tokenization, log-mel) runs on the server, exactly as
in-process.

>>> from mmedge.client import Client
>>> with Client("http://127.0.0.1:8000") as client:
...     pred = client.predict(image="cat.png", text="a cat")
...     scores = client.similarity(image="cat.png", text=["a cat", "a dog"])  # CLIP-style bundles: (1, 2)

A ``Client`` is not thread-safe (``tritonclient``'s clients are not): use one per thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmedge.errors import BackendUnavailable, ConfigError, InputError, MmedgeError
from mmedge.runtime import user_inputs as _inputs
from mmedge.serve.serve_config import DEFAULT_MODEL_NAME, check_model_name
from mmedge.runtime.modalities import InputOptions, get_modality
from mmedge.serve.protocol import OUTPUTS, QUERIES, QUERY_PROBABILITIES, SCORES, decode_outputs, input_specs

__all__ = ["Client", "ServerError", "RequestRefused", "ServerBusy", "predict"]

_INSTALL = "the mmedge client needs tritonclient: pip install 'mmedge[serve]' (or 'tritonclient[http,grpc]')"


class ServerError(MmedgeError):
    """The server refused a request or failed; the message is the server's."""


class RequestRefused(ServerError, InputError):
    """The server refused this request's input (HTTP 400 / gRPC INVALID_ARGUMENT), with the runtime's message:
    fix the input; sending it again gives the same answer."""


class ServerBusy(ServerError):
    """The server's queue is full or the request waited past its queue timeout (HTTP 503 / gRPC UNAVAILABLE):
    nothing ran; send it again later, or to another server."""


_STATUS_ERRORS = {"400": RequestRefused, "StatusCode.INVALID_ARGUMENT": RequestRefused,
                  "503": ServerBusy, "StatusCode.UNAVAILABLE": ServerBusy}


@dataclass(frozen=True)
class _Endpoint:
    protocol: str
    address: str


def _endpoint(url: str) -> _Endpoint:
    for scheme in ("http", "grpc"):
        if url.startswith(f"{scheme}://"):
            return _Endpoint(scheme, url[len(scheme) + 3:].rstrip("/"))
    if "://" in url:
        raise ConfigError(f"url {url!r}: the scheme must be http:// or grpc://")
    return _Endpoint("http", url.rstrip("/"))


def _import(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise BackendUnavailable(f"{_INSTALL} ({exc})") from exc
    return module


class Client:
    """A connection to one model on a Triton server.

    Args:
        url: ``http://host:port`` (default port 8000) or ``grpc://host:port`` (8001).
        model: The Triton model name (``mmedge serve --model-name``; default ``mmedge``).
        timeout_s: Network timeout per request, in seconds.
        max_batch: Rows per request (None: the model's ``max_batch_size``, asked once).

    Raises:
        BackendUnavailable: tritonclient is not installed.
        ConfigError: a bad url or model name.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, model: str = DEFAULT_MODEL_NAME,
                 timeout_s: float = 60.0, max_batch: int | None = None) -> None:
        self.endpoint = _endpoint(url)
        self.model = check_model_name(model)
        self._tc = _import(self.endpoint.protocol)
        self._timeout_s = float(timeout_s)
        self._max_batch = max_batch
        self._configs: dict[str, dict] = {}
        kwargs = ({"connection_timeout": timeout_s, "network_timeout": timeout_s}
                  if self.endpoint.protocol == "http" else {})
        self._client = self._tc.InferenceServerClient(self.endpoint.address, **kwargs)

    # -- health ---------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the server and the model are ready (False while starting or unreachable)."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:  # tritonclient raises transport-specific errors while the server starts
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Blocks until ``ready()``; raises ``ServerError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServerError(f"model {self.model!r} at {self.endpoint.address} not ready after {timeout_s:g} s")
            time.sleep(0.1)

    def max_batch(self) -> int:
        """Rows per request: the model's ``max_batch_size`` (asked once)."""
        if self._max_batch is None:
            self._max_batch = max(1, int(self._config(self.model).get("max_batch_size", 1)))
        return self._max_batch

    def _config(self, model: str) -> dict:
        """``model``'s config as a dict (asked once per model)."""
        if model not in self._configs:
            kwargs = {"as_json": True} if self.endpoint.protocol == "grpc" else {}
            config = self._call(self._client.get_model_config, model, **kwargs)
            self._configs[model] = config.get("config", config)
        return self._configs[model]

    def _similarity_model(self) -> str:
        """The model that takes ``queries``: the served model itself (``mmedge serve``) or its ``.similarity``
        ensemble (an ``mmedge triton`` repository)."""
        names = {i["name"] for i in self._config(self.model).get("input", [])}
        return self.model if QUERIES in names else f"{self.model}.similarity"

    # -- predict ----------------------------------------------------------------------------

    def predict(self, *, image: Any = None, text: Any = None, audio: Any = None, audio_rate: int | None = None,
                image_color_order: str = "RGB") -> Any:
        """Predicts a batch on the server; arguments as ``Session.predict``.

        Returns:
            The ``mmedge.runtime.Prediction``; ``timings_ms`` holds the round trip
            (``request``) and the server's stages (``server.<stage>``).

        Raises:
            InputError: a bad input (checked here before sending).
            RequestRefused: the server refused the input (HTTP 400 / gRPC INVALID_ARGUMENT; an ``InputError``
                too), with the runtime's message.
            ServerBusy: the server's queue is full (HTTP 503 / gRPC UNAVAILABLE); nothing ran.
            ServerError: the server failed otherwise (its message) or cannot be reached.
        """
        given = {"image": image, "text": text, "audio": audio}
        rows = _rows(given, InputOptions(image_color_order=image_color_order, audio_rate=audio_rate))
        size = _inputs.check_batch_sizes({m: len(v) for m, v in rows.items()})
        preds = [self._send({m: v[a:b] for m, v in rows.items()}) for a, b in self._chunks(rows, size)]
        return preds[0] if len(preds) == 1 else _concat(preds)

    def _chunks(self, rows: dict[str, list], size: int) -> list[tuple[int, int]]:
        """Consecutive row ranges of equal sample shapes (images, waves), each at most ``max_batch()`` rows."""
        def shape(i: int) -> tuple:
            return tuple(np.shape(rows[m][i][0] if isinstance(rows[m][i], tuple) else rows[m][i]) for m in rows)

        chunks, start, limit = [], 0, self.max_batch()
        for i in range(1, size + 1):
            if i == size or i - start == limit or shape(i) != shape(start):
                chunks.append((start, i))
                start = i
        return chunks

    def _send(self, rows: dict[str, list]) -> Any:
        start = time.perf_counter()
        result = self._infer(self.model, rows, OUTPUTS)
        return decode_outputs(result, request_ms=(time.perf_counter() - start) * 1000.0)

    def _infer(self, model: str, rows: dict[str, list], names: Sequence[str], queries: Sequence[str] = ()
               ) -> dict[str, np.ndarray]:
        """One request of ``rows`` (and ``queries`` on every row) to ``model``: output name -> array."""
        arrays = {name: a for m, samples in rows.items() for name, a in get_modality(m).to_wire(samples).items()}
        types = {t.name: t.triton_dtype for t in input_specs(list(rows))}
        if queries:
            size = len(next(iter(rows.values())))
            arrays[QUERIES] = np.array([[q.encode("utf-8") for q in queries]] * size, dtype=object)
            types[QUERIES] = "BYTES"
        inputs = []
        for name, array in arrays.items():
            inp = self._tc.InferInput(name, list(array.shape), types[name])
            inp.set_data_from_numpy(array)
            inputs.append(inp)
        outputs = [self._tc.InferRequestedOutput(n) for n in names]
        kwargs = {"client_timeout": self._timeout_s} if self.endpoint.protocol == "grpc" else {}
        result = self._call(self._client.infer, model, inputs, outputs=outputs, **kwargs)
        return {n: result.as_numpy(n) for n in names}

    # -- similarity ---------------------------------------------------------------------------

    def similarity(self, *, text: str | Sequence[str], image: Any = None, audio: Any = None,
                   audio_rate: int | None = None, probabilities: bool = False, image_color_order: str = "RGB"
                   ) -> np.ndarray:
        """(N_inputs, N_texts) scores of images (CLAP: audio clips) against free texts on the server, as
        ``Session.similarity`` (``probabilities``: the model's activation); the texts travel as ``queries``.

        Raises:
            InputError: bad inputs or texts (checked here before sending).
            RequestRefused: the server refused them (HTTP 400 / gRPC INVALID_ARGUMENT), e.g. a bundle without
                a similarity record.
            ServerBusy, ServerError: as ``predict``.
        """
        queries = [text] if isinstance(text, str) else list(text)
        if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
            raise InputError(f"text must be a non-empty list of non-empty strings, got {text!r}")
        given = {"image": image, "audio": audio}
        rows = _rows(given, InputOptions(image_color_order=image_color_order, audio_rate=audio_rate))
        if len(rows) != 1:
            raise InputError(f"pass exactly one of image= or audio= (the inputs to score), got {sorted(rows)}")
        size, model = len(next(iter(rows.values()))), self._similarity_model()
        name = QUERY_PROBABILITIES if probabilities else SCORES
        parts = [self._infer(model, {m: v[a:b] for m, v in rows.items()}, (name,), queries)[name]
                 for a, b in self._chunks(rows, size)]
        return np.concatenate(parts).astype(np.float32)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            kind = _STATUS_ERRORS.get(str(exc.status()), ServerError)
            raise kind(f"{self.endpoint.protocol}://{self.endpoint.address} model {self.model!r}: "
                              f"{_message(exc)}") from None
        except (ConnectionError, OSError) as exc:
            raise ServerError(f"cannot reach {self.endpoint.address} ({exc}); is `mmedge serve` running?") from None

    def close(self) -> None:
        """Closes the connection."""
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _message(exc: Any) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    text = text or str(exc)
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    for line in reversed(lines):  # a model error carries a traceback: keep its last, typed line
        if "Error:" in line:
            return line.strip()
    return " ".join(lines)[:2000]


def _rows(given: dict[str, Any], options: InputOptions) -> dict[str, list]:
    """Each given modality's samples, read here as ``Session.predict`` reads them (files decoded)."""
    rows = {m: get_modality(m).prepare(v, options) for m, v in given.items() if v is not None}
    if not rows:
        raise InputError(f"pass at least one of {', '.join(m + '=' for m in given)}")
    return rows


def _concat(preds: Sequence[Any]) -> Any:
    from mmedge.runtime.prediction import Prediction

    first = preds[0]
    members = {n: np.concatenate([p.member_probabilities[n] for p in preds]) for n in first.member_probabilities}
    total = {"request": sum(p.timings_ms.get("request", 0.0) for p in preds)}
    return Prediction(labels=[lb for p in preds for lb in p.labels], indices=np.concatenate([p.indices for p in preds]),
                      probabilities=np.concatenate([p.probabilities for p in preds]), member_probabilities=members,
                      timings_ms=total, backend=first.backend, precision=first.precision, members=first.members,
                      skipped_members=first.skipped_members, note=first.note)


def predict(*, url: str = "http://127.0.0.1:8000", model: str = DEFAULT_MODEL_NAME, image: Any = None,
            text: Any = None, audio: Any = None, audio_rate: int | None = None, image_color_order: str = "RGB") -> Any:
    """One prediction against a server (opens and closes a ``Client``); arguments as ``Session.predict``.

    Returns:
        The ``mmedge.runtime.Prediction``.
    """
    with Client(url, model=model) as client:
        return client.predict(image=image, text=text, audio=audio, audio_rate=audio_rate,
                              image_color_order=image_color_order)
