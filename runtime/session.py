"""``Session``: runs a bundle's encoders once per call, every member head, and the ensemble.

numpy + onnxruntime (or TensorRT): never torch. One Session may be shared by threads.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mmedge.errors import BundleError, InputError
from mmedge.runtime import user_inputs as _inputs
from mmedge.runtime.blas_threads import BlasLimit
from mmedge.runtime.bundle import Bundle, MemberInfo
from mmedge.runtime.encoder_lanes import EncoderLanes, LanePlan, plan_lanes
from mmedge.runtime.ensemble import ensemble_prediction
from mmedge.runtime.graph_checks import check_graphs, check_logits, length_axis_dynamic
from mmedge.runtime.modalities import (InputOptions, Modality, Preprocess, PreprocessContext, check_given,
                                       encoder_feed, get_modality)
from mmedge.runtime.limits import Limits
from mmedge.runtime.merged_heads import check_merged, head_components, member_head, merged_prediction
from mmedge.runtime.prediction import Prediction
from mmedge.runtime.session_config import check_session_config
from mmedge.runtime.streams import capture_frames, open_capture
from mmedge.runtime.similarity import query_step, session_similarity, similarity_modalities
from mmedge.runtime.text_cache import CacheInfo, TextCache
from mmedge.runtime.backends import (BackendChoice, BaseRunner, GraphRef, LoadSettings, backend_order, get_backend,
                                     resolve_backend)
from mmedge.runtime.backends.fallback import honest_choice
from mmedge.runtime.backends.placement import open_placed
from mmedge.runtime.backends.trt_engines import default_engine_root

TEXT_BUCKET = 8  # text (any variable-length input) is padded to a multiple of this many tokens when the graphs allow it

__all__ = ["Session", "Prediction"]


@dataclass(frozen=True)
class _Plan:
    members: tuple[MemberInfo, ...]
    modalities: tuple[str, ...]
    skipped: tuple[str, ...]
    note: str


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Session:
    """Runs a bundle on one backend at one precision.

    Args:
        bundle: A ``Bundle`` or a path to a bundle folder / ``.mmedge`` file.
        precision: A precision the bundle has with status ok (``bundle.precisions()``).
        backend: ``"auto"`` or a backend name (``available_backends()``).
        threads: CPU threads per graph (ONNX Runtime ``intra_op_num_threads``); None: all cores.
        text_cache_size: Strings kept in the text-embedding LRU cache (0 disables it).
        engine_dir: The engine root ``mmedge build`` wrote to, one folder per device key
            (default ``<bundle>/engines``; ``<file>.engines`` beside a ``.mmedge`` file).
        members: Run only these ensemble members (and only the encoders they use), with the
            ensemble weights re-normalized over them; None: all (used by ``mmedge bench`` to time
            a single member against the ensemble).
        auto_build: Build this precision's TensorRT engines here when they are missing or were
            built for another device or graph (needs TensorRT; backend ``auto`` or ``tensorrt``).
        cuda_graph: TensorRT backend: capture a CUDA graph per input-shape combination and replay it.
        limits: What one call may hold (text characters, batch, audio seconds and rates, image
            pixels; ``mmedge.runtime.limits.Limits``); default: the bundle's, ``Limits()``.
        strict: Refuse a backend that ONNX Runtime runs on a slower execution provider than asked
            (a GPU backend that fell back to the CPU); without it the fallback is reported in
            ``backend``, ``backend_reason`` and a ``BackendFallbackWarning``.
        preprocess_threads: BLAS threads numpy may use while this Session preprocesses (the
            log-mel matmul, resizes), so that numpy's busy-waiting pool does not fight the
            backend's threads; the process's setting is restored after each call
            (``mmedge.runtime.blas_threads``). None: leave numpy's setting alone.
        encoder_lanes: How many encoders run at once (``mmedge.runtime.encoder_lanes``), every graph then
            on ``threads // lanes`` threads; None: one per encoder up to ``threads`` (all cores) on a CPU
            backend, one on a GPU backend; 1: one after another, every graph on ``threads``.

    Attributes:
        backend: The backend name in use; ``backend_reason`` says why it was chosen.
        lane_plan: How the encoders run (``LanePlan``: lanes, threads per graph, why).

    Raises:
        BundleError: an invalid bundle, a precision it does not have (valid ones listed), a graph
            that does not match the manifest, or a file changed since it was verified.
        BackendUnavailable: the backend cannot run here (what can, and how to install it), or
            fell back to a slower execution provider with ``strict=True``.
        EngineMismatch: ``backend="tensorrt"`` with engines built for another device or graph
            (what differs, and the ``mmedge build`` command to run).
    """

    def __init__(self, bundle: Bundle | str | Path, *, precision: str = "fp32", backend: str = "auto",
                 threads: int | None = None, text_cache_size: int = 256,
                 engine_dir: str | Path | None = None, members: Sequence[str] | None = None,
                 auto_build: bool = False, cuda_graph: bool = False, limits: Limits | None = None,
                 strict: bool = False, preprocess_threads: int | None = 1, encoder_lanes: int | None = None) -> None:
        check_session_config(threads, text_cache_size, limits, encoder_lanes)
        self._blas_limit = BlasLimit(preprocess_threads)
        self._owns_bundle = not isinstance(bundle, Bundle)
        self.bundle = Bundle.open(bundle, limits=limits) if self._owns_bundle else bundle
        self.limits = limits if limits is not None else self.bundle.limits
        self._runners: dict[str, BaseRunner] = {}
        self._lanes, self._load_lock = EncoderLanes(1), threading.Lock()
        try:
            self._members = self.bundle.members if members is None else tuple(map(self.bundle.member, members))
            problem = self.bundle.precision_problem(precision)
            if problem:
                raise BundleError(problem)
            self.precision = precision
            self._engine_dir = Path(engine_dir) if engine_dir is not None else default_engine_root(self.bundle.source)
            settings = LoadSettings(self.bundle.source, precision, self._engine_dir, threads, cuda_graph,
                                    auto=backend == "auto")
            graphs = tuple(GraphRef.from_bundle(self.bundle, c, precision) for c in self._components())
            if auto_build:
                self._build_missing(backend, graphs, settings)
            choice = resolve_backend(backend, graphs=graphs, settings=settings)
            encoders = sum(g.component.startswith("encoder.") for g in graphs)
            self.lane_plan: LanePlan = plan_lanes(encoder_lanes, threads=threads, encoders=encoders,
                                                  cpu_backend=get_backend(choice.name).cpu)
            self._settings = replace(settings, lanes=self.lane_plan.lanes, threads=self.lane_plan.graph_threads)
            self._runners, choice = open_placed(choice, graphs, self._settings)  # mixed: graphs on other CPU backends
            self._choice, self._strict = honest_choice(choice, self._runners, strict=strict), strict
            self._preprocessors = self._make_preprocessors()
            check_graphs(self.bundle, self._runners, check_merged(self), self._preprocessors)
            self._lanes = EncoderLanes(self.lane_plan.lanes)
        except BaseException:
            self.close()
            raise
        self._text_cache = TextCache(text_cache_size)

    # -- setup ---------------------------------------------------------------------------

    def _components(self) -> list[str]:
        used = {m for mb in self._members for m in mb.modalities} | set(similarity_modalities(self.bundle))
        return [f"encoder.{m}" for m in self.bundle.encoders if m in used] + head_components(self)

    def _build_missing(self, backend: str, graphs: tuple[GraphRef, ...], settings: LoadSettings) -> None:
        """auto_build: builds what the requested backend (for auto: the fastest one here) needs, e.g. engines."""
        rows = backend_order() if backend == "auto" else (get_backend(backend),)
        row = next((r for r in rows if r.availability() is None), None)
        if row is not None:
            row.loader.build_missing(self.bundle, graphs, settings)

    def _make_preprocessors(self) -> dict[str, Preprocess]:
        """Each modality's preprocessing, built once from its spec (and the bundle's files it names)."""
        out = {}
        for m in self.bundle.modalities:
            bucket = TEXT_BUCKET if length_axis_dynamic(self._runners, f"encoder.{m}") else 0
            context = PreprocessContext(read_file=self.bundle.read_bytes, folder=self.bundle.root, length_bucket=bucket)
            out[m] = get_modality(m).preprocessor(self.bundle.specs[m], context)
        return out

    @property
    def length_buckets(self) -> dict[str, int]:
        """Per modality, the multiple its variable-length inputs (text tokens) are padded to: the
        batch's longest, rounded up to it; 0: the spec's full length (what a baseline must match)."""
        return {m: int(getattr(p, "bucket", 0)) for m, p in self._preprocessors.items()}

    @property
    def backend(self) -> str:
        """The backend in use."""
        return self._choice.name

    @property
    def backend_reason(self) -> str:
        """Why this backend was chosen."""
        return self._choice.reason

    @property
    def backend_choice(self) -> BackendChoice:
        """The backend in use and the reason, together."""
        return self._choice

    @property
    def backends(self) -> dict[str, str]:
        """Component -> the backend running it (``mixed`` may place graphs on another CPU backend)."""
        return {c: r.backend_fallback.runs_as if r.backend_fallback else self._choice.placed.get(c, self._choice.name)
                for c, r in self._runners.items()}

    # -- planning ------------------------------------------------------------------------

    def _plan(self, given: Sequence[str]) -> _Plan:
        bundle = self.bundle
        unknown = [m for m in given if m not in bundle.modalities]
        if unknown:
            raise InputError(f"this bundle takes {list(bundle.modalities)}; it has no {unknown} "
                             "(leave those arguments out)")
        if not given:
            raise InputError(f"pass at least one input: this bundle takes {list(bundle.modalities)}")
        missing = [m for m in bundle.modalities if m not in given]
        required = [m for m in missing if m not in bundle.optional_modalities]
        if required:
            raise InputError(f"this bundle needs {required} as well (it takes {list(bundle.modalities)}; "
                             f"optional: {list(bundle.optional_modalities)}); pass {', '.join(m + '=' for m in required)}")
        members = tuple(m for m in self._members if set(m.modalities) <= set(given))
        skipped = tuple(m.name for m in self._members if m not in members)
        if not members:
            raise InputError(f"no ensemble member can run without {missing}; pass them")
        if sum(m.weight for m in members) <= 0 and bundle.ensemble.method != "soft_vote":
            raise InputError(f"the members that can run without {missing} ({[m.name for m in members]}) all "
                             "have weight 0; pass the missing modalities")
        note = (f"optional modalities {missing} not given: ran {[m.name for m in members]}, skipped "
                f"{list(skipped)}, ensemble weights re-normalized over the members that ran") if skipped else ""
        modalities = tuple(m for m in bundle.modalities if any(m in mb.modalities for mb in members))
        return _Plan(members, modalities, skipped, note)

    # -- encoders ------------------------------------------------------------------------

    def _feed(self, component: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = encoder_feed(component, self._runners[component].input_names, list(arrays))
        return {name: arrays[source] for name, source in feed.items()}

    def _run_encoder(self, modality: str, arrays: dict[str, np.ndarray], timings: dict[str, float]
                     ) -> dict[str, np.ndarray]:
        component = f"encoder.{modality}"
        start = time.perf_counter()
        out = self._runners[component].infer(self._feed(component, arrays))
        timings[component] = timings.get(component, 0.0) + _ms(start)
        return out

    def _encode_uncached(self, record: Modality, items: list, options: InputOptions, timings: dict[str, float]
                         ) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        with self._blas_limit:
            arrays = self._preprocessors[record.name](record.load(items, options, self.limits))
        stage = f"preprocess.{record.name}"
        timings[stage] = timings.get(stage, 0.0) + _ms(start)
        return self._run_encoder(record.name, arrays, timings)

    def _encode(self, modality: str, items: list, options: InputOptions, timings: dict[str, float]
                ) -> dict[str, np.ndarray]:
        record = get_modality(modality)
        if not record.cacheable:
            return self._encode_uncached(record, items, options, timings)
        return self._text_cache.lookup(items, lambda misses: self._encode_uncached(record, misses, options, timings))

    def encode_texts(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """Encodes texts with the text encoder through the cache (pre-warms it for fixed prompts).

        Args:
            texts: A string or a list of strings.

        Returns:
            The text encoder outputs (``text_pooled``, ``text_seq``, ``text_mask``), each (B, ...).

        Raises:
            InputError: the bundle has no text, or a text is empty.
        """
        if "text" not in self._preprocessors:
            raise InputError(f"this bundle has no text encoder (modalities {list(self.bundle.modalities)})")
        return self._encode("text", get_modality("text").split(texts, InputOptions(), self.limits), InputOptions(), {})

    def text_cache_info(self) -> CacheInfo:
        """Hits, misses, size and text-encoder runs of the text cache."""
        return self._text_cache.info()

    def similarity(self, *, text: str | Sequence[str], image: Any = None, audio: Any = None,
                   probabilities: bool = False, **options: Any) -> np.ndarray:
        """(N_inputs, N_texts) scores of images (CLAP: audio clips) against free texts with the model's own
        logit scale and bias, as its ``logits_per_image`` (``probabilities``: softmax over the texts, SigLIP's
        sigmoid per pair); texts are cached. ``options``: ``image_color_order``, ``audio_rate``, ``audio_layout``.
        Raises ``InputError``: no similarity in the bundle, not one of image / audio, bad inputs."""
        return session_similarity(self, text=text, inputs={"image": image, "audio": audio},
                                  options=InputOptions(**options), probabilities=probabilities)

    # -- predict ---------------------------------------------------------------------------

    def predict(self, *, image: Any = None, text: Any = None, audio: Any = None, audio_rate: int | None = None,
                image_color_order: str = "RGB", audio_layout: str | None = None, **inputs: Any) -> Prediction:
        """Predicts a batch.

        Args:
            image: One image or a list: HxWx3 uint8 RGB arrays (BGR camera frames with
                ``image_color_order="BGR"``), file paths or encoded PNG/JPEG bytes.
            text: A string or a list of strings.
            audio: One wave or a list: float (full scale +-1)/int16/int32 arrays at ``audio_rate``
                (resampled to the bundle's rate), wav/flac file paths, or ``(array, rate)`` pairs.
            audio_rate: Sample rate (Hz) of audio arrays.
            image_color_order: ``"RGB"`` or ``"BGR"``, for image arrays.
            audio_layout: Where the channels of 2-D audio arrays are: ``"channels_first"`` (C, N)
                or ``"channels_last"`` (N, C); None (default) takes 1-D clips only.
            **inputs: The inputs of other registered modalities (``mmedge.runtime.modalities``), by name.

        Returns:
            The ensemble ``Prediction``.

        Raises:
            InputError: a bad input (named, with what is accepted), one over ``limits``, a
                modality the bundle lacks, a required modality missing, or batch sizes that differ.
            BundleError: a graph that fails or gives NaN/Inf on valid inputs.
        """
        start, timings = time.perf_counter(), {}
        options = InputOptions(image_color_order=image_color_order, audio_rate=audio_rate, audio_layout=audio_layout)
        given = {m: v for m, v in dict(inputs, image=image, text=text, audio=audio).items() if v is not None}
        check_given(list(given))
        plan = self._plan(list(given))
        items = self._split(plan.modalities, given, options)
        jobs = {m: functools.partial(self._encode, m, items[m], options, timings) for m in plan.modalities}
        encoded = self._lanes.run(jobs)  # at once on a CPU backend (runtime/encoder_lanes.py)
        feats = {name: array for out in encoded.values() for name, array in out.items()}
        pred = merged_prediction(self, plan, feats, timings)  # one graph for every head and the rule, when present
        pred = pred or self._combine(plan, {m.name: self._run_head(m, feats, timings) for m in plan.members}, timings)
        timings["total"] = _ms(start)
        return pred

    def _split(self, modalities: Sequence[str], given: dict[str, Any], options: InputOptions) -> dict[str, list]:
        items = {m: get_modality(m).split(given[m], options, self.limits) for m in modalities}
        _inputs.check_batch_sizes({m: len(v) for m, v in items.items()})
        return items

    def _run_head(self, member: MemberInfo, feats: dict[str, np.ndarray], timings: dict[str, float]) -> np.ndarray:
        component = f"head.{member.name}"
        start = time.perf_counter()
        out = member_head(self, member).infer({n: feats[n] for n in member.inputs})
        timings[component] = _ms(start)
        batch = len(feats[member.inputs[0]])
        return check_logits(member, out[member.output], len(self.bundle.labels), batch)  # (B, C)

    def _combine(self, plan: _Plan, logits: dict[str, np.ndarray], timings: dict[str, float]) -> Prediction:
        return ensemble_prediction(logits, plan.members, method=self.bundle.ensemble.method, labels=self.bundle.labels,
                                   backend=self.backend, precision=self.precision, skipped=plan.skipped,
                                   note=plan.note, timings=timings, stacking=self.bundle.ensemble.stacking_model)

    # -- video -----------------------------------------------------------------------------

    def stream(self, source: int | str | Path, *, text: str | Sequence[str] | None = None, every: int = 1,
               max_frames: int | None = None, queries: Sequence[str] | None = None) -> Iterator[tuple[np.ndarray, Any]]:
        """Predicts on frames of a camera or video file.

        Args:
            source: A camera index (``0``) or a video file path (anything ``cv2.VideoCapture`` opens).
            text: Text to pair with each frame (a list of K prompts scores each frame against all K).
            every: Predict on every ``every``-th frame only.
            max_frames: Stop after this many predictions (None: until the source ends).
            queries: Free texts each frame is scored against instead (``similarity``): yields ``Matches``.

        Yields:
            ``(frame_bgr, Prediction)``; the capture is released when the generator ends.

        Raises:
            InputError: a bad ``source``, ``text``, ``every`` or ``max_frames``, a bundle that needs
                more than frames and ``text``, or a source that cannot be opened.
        """
        _inputs.check_stream_args(source, text, every, max_frames, self.limits)
        step = query_step(self, queries, text) if queries is not None else self._predict_step(text)
        return capture_frames(open_capture(source), step, every, max_frames)

    def _predict_step(self, text: Any) -> Any:
        self._plan(["image"] + (["text"] if text is not None else []))
        return lambda frame: self.predict(image=[frame] * len(text) if isinstance(text, (list, tuple)) else frame,
                                          text=text, image_color_order="BGR")

    def streams(self, sources: Sequence[int | str | Path], *, text: str | None = None, fps: float | None = None,
                max_age: float | None = None, max_ticks: int | None = None, queries: Sequence[str] | None = None
                ) -> Iterator[list]:
        """Predicts on several cameras or video files at once: one batched ``predict`` per tick.

        One capture thread per source keeps its newest frame; each tick batches the newest unused
        frame of every source (older ones are dropped). ``fps``: read video files at this rate
        (default: the file's own, like a camera; 0: every frame, as fast as ticks take them); ``max_age``: drop
        frames older than this many seconds; ``max_ticks``: stop after this many ticks; ``queries``: score
        each frame against these free texts instead (``similarity``: its ``Matches`` as the prediction).

        Yields:
            Per tick, a list of ``mmedge.runtime.streams.StreamPrediction`` (source, frame, batch-of-1
            prediction, capture time, capture-to-prediction latency). Captures are released when
            the iteration ends, fails or is closed.
        """
        from mmedge.runtime.streams import multi_stream

        if queries is None:
            self._plan(["image"] + (["text"] if text is not None else []))
        return multi_stream(self, sources, text=text, fps=fps, max_age=max_age, max_ticks=max_ticks, queries=queries)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Frees every runner, the lane threads (and the bundle's temporary folder if this Session opened it)."""
        self._lanes.close()
        for runner in getattr(self, "_runners", {}).values():
            runner.deactivate()
        self._runners = {}
        if getattr(self, "_owns_bundle", False) and getattr(self, "bundle", None) is not None:
            self.bundle.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session({self.bundle.name!r}, precision={getattr(self, 'precision', None)!r}, "
                f"backend={self._choice.name!r})")
