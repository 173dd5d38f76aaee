"""``MessagePredictor``: deserialized ROS messages in, predictions out; shared by replay and the node.

It pairs the image and audio topics with ``ApproximateTimeSync`` (or, with an audio window, keeps
the last seconds of chunked audio for each frame), keeps the latest caption, turns
each pair into ``Session.predict`` inputs with ``convert`` and hands the payloads to ``emit``
(replay writes them into the output bag, the node publishes them).
"""
from __future__ import annotations

from typing import Any, Callable

from mmedge.robotics import convert
from mmedge.robotics.sync import ApproximateTimeSync, LatestValue, SampleWindow

__all__ = ["Emit", "MessagePredictor"]

# emit(payloads (one, or one per query), header stamp ns, frame_id)
Emit = Callable[[list, int, str], None]


class MessagePredictor:
    """Feeds messages of the configured topics to a Session.

    Args:
        session: A ``mmedge.runtime.Session``.
        config: A ``ReplayConfig`` (topics, fixed text or queries, ``queue_size``, ``slop``).
        roles: Topic -> ``"image"``, ``"audio"``, ``"audio_info"`` or ``"text"``.
        emit: Receives every prediction.

    Attributes:
        sync: The synchronizer (its ``dropped`` and ``pending()`` count unpaired messages).
        predictions: Predictions emitted so far.
    """

    def __init__(self, session: Any, config: Any, roles: dict[str, str], emit: Emit) -> None:
        self.session, self.config, self.roles, self.emit = session, config, roles, emit
        window = getattr(config, "audio_window", 0.0)
        self.audio_window = SampleWindow(window) if window and config.image_topic else None
        self.paired = tuple(t for t in (config.image_topic, None if self.audio_window else config.audio_topic) if t)
        self.sync = ApproximateTimeSync(self.paired, queue_size=config.queue_size, slop=config.slop)
        self.caption: LatestValue[str] = LatestValue(config.text)
        self.audio_format: convert.AudioFormat | None = None
        self.labels = list(session.bundle.labels)
        self.predictions = 0

    def handle(self, topic: str, time_ns: int, msg: Any) -> None:
        """Feeds one message (``time_ns``: its bag or receive time); predicts when it completes a pair.

        Raises:
            MessageError: the message cannot be used (replay records it as a skip; the node logs it).
            InputError: the Session refused the inputs.
        """
        role = self.roles[topic]
        if role == "audio_info":
            self.audio_format = convert.audio_format_from_info(msg)
            return
        if role == "text":
            self.caption.set(convert.text_from_msg(msg))
            return
        item = self._convert(role, msg)
        if role == "audio" and self.audio_window is not None:
            self.audio_window.add(convert.stamp_ns(msg, time_ns), item)
            return
        match = self.sync.add(topic, convert.stamp_ns(msg, time_ns), (item, msg))
        if match is not None:
            self._predict(match)

    def _convert(self, role: str, msg: Any) -> Any:
        if role == "image":
            return convert.image_from_msg(msg)
        if self.audio_format is None:
            raise convert.MessageError("no AudioInfo seen yet for this audio; record the audio_info topic "
                                       "(or name it with --audio-info-topic)")
        return convert.audio_from_msg(msg, self.audio_format)

    def _inputs(self, match: dict) -> dict[str, Any]:
        given: dict[str, Any] = {}
        if self.config.image_topic:
            given["image"] = match[self.config.image_topic].item[0]
        if self.config.audio_topic:
            given["audio"], given["audio_rate"] = self._audio(match), self.audio_format.sample_rate
        caption = self.caption.get()
        if self.config.queries:
            k = len(self.config.queries)
            given.update({m: [given[m]] * k for m in ("image", "audio") if m in given}, text=list(self.config.queries))
        elif caption is not None:
            given["text"] = caption
        elif "text" in self.session.bundle.modalities and "text" not in self.session.bundle.optional_modalities:
            raise convert.MessageError("no caption received yet on the text topic; this pair is skipped")
        return given

    def _audio(self, match: dict) -> Any:
        if self.audio_window is None:
            return match[self.config.audio_topic].item[0]
        samples = None if self.audio_format is None else \
            self.audio_window.window(match[self.config.image_topic].stamp_ns, self.audio_format.sample_rate)
        if samples is None:
            raise convert.MessageError("no audio received yet before this frame; this frame is skipped")
        return samples

    def _predict(self, match: dict) -> None:
        first = match[self.paired[0]]
        pred = self.session.predict(**self._inputs(match))
        queries = self.config.queries or (None,)
        payloads = [convert.prediction_payload(pred, self.labels, row=i, query=q) for i, q in enumerate(queries)]
        frame_id = getattr(getattr(first.item[1], "header", None), "frame_id", "")
        self.emit(payloads, first.stamp_ns, frame_id)
        self.predictions += 1
