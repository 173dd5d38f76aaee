"""``Session.streams``: several cameras or video files, batched into one ``predict`` per tick.

One capture thread per source keeps only the newest frame; each tick takes the newest unused frame
of every source (frames replaced before a tick used them are dropped, and so are frames older
than ``max_age``; a video file read at ``fps=0`` is read in lockstep instead: every frame, as fast
as the model takes them), runs them as one batch (the text once, through the Session's text cache) and
yields one ``StreamPrediction`` per source with its capture time and capture-to-prediction
latency. Threads stop and captures are released when the iteration ends, fails or is closed.
numpy + cv2 only; never torch.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.prediction import Prediction
from mmedge.runtime.user_inputs import check_stream_args

__all__ = ["StreamPrediction", "StreamStats", "open_capture", "capture_frames", "multi_stream", "prediction_row"]

Source = int | str | Path
_WAIT_S = 0.5  # longest wait for a frame before the sources are checked for their end again


@dataclass(frozen=True)
class StreamPrediction:
    """One source's prediction in a tick.

    Attributes:
        source: The source as given (camera index or path); ``index`` is its position in the list.
        frame: The BGR frame (H, W, 3) that was predicted on; ``frame_number`` counts the source's reads from 1.
        prediction: A batch-of-1 ``Prediction`` (its timings are the whole tick's batch).
        capture_time: ``time.monotonic()`` when the frame was read.
        latency_ms: Capture to prediction, milliseconds.
    """

    source: Source
    index: int
    frame: np.ndarray
    frame_number: int
    prediction: Any  # a Prediction; the frame's Matches with Session.streams(..., queries=[...])
    capture_time: float
    latency_ms: float


@dataclass
class StreamStats:
    """Per source: frames read, predicted, and dropped (replaced before use, or older than ``max_age``)."""

    read: list[int]
    predicted: list[int]
    dropped: list[int]


def prediction_row(pred: Prediction, row: int) -> Prediction:
    """Row ``row`` of a batch prediction as a batch-of-1 ``Prediction``."""
    return dataclasses.replace(pred, labels=[pred.labels[row]], indices=pred.indices[row:row + 1],
                               probabilities=pred.probabilities[row:row + 1],
                               member_probabilities={k: v[row:row + 1] for k, v in pred.member_probabilities.items()})


def capture_frames(capture: Any, step: Any, every: int, max_frames: int | None) -> Iterator[tuple[np.ndarray, Any]]:
    """``Session.stream``: ``(frame, step(frame))`` for every ``every``-th frame of one opened ``cv2.VideoCapture``,
    up to ``max_frames`` predictions; the capture is released when the generator ends."""
    try:
        index = produced = 0
        while max_frames is None or produced < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            index += 1
            if (index - 1) % every:
                continue
            yield frame, step(frame)
            produced += 1
    finally:
        capture.release()


class _Capture(threading.Thread):
    """Reads one source in its own thread, keeping the newest frame under the shared condition."""

    def __init__(self, index: int, source: Source, capture: Any, interval: float | None, cond: threading.Condition,
                 stop: threading.Event) -> None:
        super().__init__(name=f"mmedge-capture-{index}", daemon=True)
        self.index, self.source, self.capture = index, source, capture
        self.lockstep = interval is None  # a file at fps=0: the next frame is read once this one was taken
        self.interval = interval or 0.0
        self.cond, self.stop = cond, stop
        self.latest: tuple[np.ndarray, float, int] | None = None
        self.read = self.dropped = 0
        self.ended = False

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self.stop.is_set():
                if self.lockstep and not self._wait_taken():
                    break
                ok, frame = self.capture.read()
                now = time.monotonic()
                if not ok:
                    break
                self._offer(frame, now)
                next_at = max(next_at + self.interval, now) if self.interval else now
                if self.interval:
                    self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.capture.release()
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def _wait_taken(self) -> bool:
        with self.cond:
            while self.latest is not None and not self.stop.is_set():
                self.cond.wait(_WAIT_S)
        return not self.stop.is_set()

    def _offer(self, frame: np.ndarray, now: float) -> None:
        with self.cond:
            self.read += 1
            if self.latest is not None:
                self.dropped += 1  # never used: a newer frame replaces it
            self.latest = (frame, now, self.read)
            self.cond.notify_all()

    def take(self) -> tuple[np.ndarray, float, int] | None:
        """The newest unused frame (call with ``cond`` held)."""
        latest, self.latest = self.latest, None
        return latest


def _check(sources: Any, text: Any, fps: Any, max_age: Any, max_ticks: Any, limits: Any) -> list[Source]:
    if isinstance(sources, (str, Path, int)) or not isinstance(sources, (list, tuple)) or not sources:
        raise InputError(f"sources must be a non-empty list of camera indices or video paths, got {sources!r}; "
                         "for one source use stream()")
    if len(sources) > limits.max_batch:
        raise InputError(f"{len(sources)} sources is more than max_batch ({limits.max_batch}); "
                         f"{limits.raise_hint('max_batch')}")
    if text is not None and not isinstance(text, str):
        raise InputError(f"streams() pairs every frame with one text (a string), got {type(text).__name__}; "
                         "score several prompts per frame with stream()")
    for name, value in (("fps", fps), ("max_age", max_age)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InputError(f"{name} must be a number >= 0 or None, got {value!r}")
    if max_ticks is not None and (isinstance(max_ticks, bool) or not isinstance(max_ticks, int) or max_ticks < 1):
        raise InputError(f"max_ticks must be a positive integer or None, got {max_ticks!r}")
    for source in sources:
        check_stream_args(source, text, 1, None, limits)
    return list(sources)


def open_capture(source: Source) -> Any:
    """An opened ``cv2.VideoCapture`` of a camera index or video file.

    Raises:
        InputError: the source cannot be opened.
    """
    import cv2

    capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        capture.release()
        raise InputError(f"cannot open video source {source!r}; pass a camera index (e.g. 0) or a readable "
                         "video file")
    return capture


def _open(sources: Sequence[Source], fps: float | None) -> list[tuple[Any, float | None]]:
    """Each source's capture and read interval (seconds; 0: as the camera delivers; None: lockstep)."""
    import cv2

    opened: list[tuple[Any, float | None]] = []
    for source in sources:
        try:
            capture = open_capture(source)
        except InputError:
            for other, _ in opened:
                other.release()
            raise
        if isinstance(source, int):
            opened.append((capture, 1.0 / fps if fps else 0.0))
            continue
        rate = fps if fps is not None else capture.get(cv2.CAP_PROP_FPS) or 30.0
        opened.append((capture, 1.0 / rate if rate else None))
    return opened


def _next_batch(captures: list[_Capture], cond: threading.Condition, max_age: float | None
                ) -> list[tuple[_Capture, tuple[np.ndarray, float, int]]] | None:
    """Waits for fresh frames; None when every source has ended."""
    with cond:
        while True:
            batch = [(c, f) for c in captures if (f := c.take()) is not None]
            if batch:
                cond.notify_all()  # lockstep readers may read their next frame
            if max_age is not None:
                now = time.monotonic()
                for c, f in batch:
                    c.dropped += now - f[1] > max_age
                batch = [(c, f) for c, f in batch if now - f[1] <= max_age]
            if batch:
                return batch
            if all(c.ended for c in captures):
                return None
            cond.wait(_WAIT_S)


def multi_stream(session: Any, sources: Sequence[Source], *, text: str | None = None, fps: float | None = None,
                 max_age: float | None = None, max_ticks: int | None = None,
                 stats: StreamStats | None = None, queries: Sequence[str] | None = None
                 ) -> Iterator[list[StreamPrediction]]:
    """The iterator behind ``Session.streams`` (arguments documented there); with ``queries`` each
    ``StreamPrediction.prediction`` is the frame's ``Matches`` (``mmedge.runtime.similarity``)."""
    sources = _check(sources, text, fps, max_age, max_ticks, session.limits)
    if queries is not None:
        from mmedge.runtime.similarity import query_step

        query_step(session, queries, text)  # checks the queries and the bundle, encodes them once
        text = tuple(queries)
    return _ticks(session, sources, text, fps, max_age, max_ticks, stats)


def _ticks(session: Any, sources: list[Source], text: str | None, fps: float | None, max_age: float | None,
           max_ticks: int | None, stats: StreamStats | None) -> Iterator[list[StreamPrediction]]:
    cond, stop = threading.Condition(), threading.Event()
    captures = [_Capture(i, s, cap, interval, cond, stop) for i, (s, (cap, interval))
                in enumerate(zip(sources, _open(sources, fps)))]
    predicted = [0] * len(captures)
    try:
        for capture in captures:
            capture.start()
        ticks = 0
        while max_ticks is None or ticks < max_ticks:
            batch = _next_batch(captures, cond, max_age)
            if batch is None:
                break
            yield _predict(session, batch, text, predicted)
            ticks += 1
    finally:
        stop.set()
        with cond:
            cond.notify_all()  # wakes lockstep readers waiting for their frame to be taken
        for capture in captures:
            capture.join(timeout=5.0)  # a camera read that blocks longer is left to its daemon thread
        if stats is not None:
            stats.read, stats.dropped = [c.read for c in captures], [c.dropped for c in captures]
            stats.predicted = predicted


def _predict(session: Any, batch: list, text: Any, predicted: list[int]) -> list[StreamPrediction]:
    frames = [f[0] for _, f in batch]
    if isinstance(text, tuple):  # queries: each frame's Matches
        from mmedge.runtime.similarity import matches_rows

        rows = matches_rows(session, frames, text)
    else:
        pred = session.predict(image=frames, text=None if text is None else [text] * len(frames),
                               image_color_order="BGR")
        rows = [prediction_row(pred, row) for row in range(len(frames))]
    done = time.monotonic()
    out = []
    for row, (capture, (frame, captured, number)) in enumerate(batch):
        predicted[capture.index] += 1
        out.append(StreamPrediction(capture.source, capture.index, frame, number, rows[row], captured,
                                    (done - captured) * 1000.0))
    return out
