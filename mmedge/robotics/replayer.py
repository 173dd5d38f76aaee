"""``replay``: a rosbag through a Session into an output bag of predictions (``mmedge replay``).

Reads rosbag2 (MCAP, sqlite3) and ROS 1 bags with ``rosbags``; pairs the image and audio topics
with ``ApproximateTimeSync`` and the captions with latest-text-wins (``MessagePredictor``); writes, per prediction, a
``std_msgs/String`` (the JSON of ``convert.prediction_payload``) and a ``vision_msgs/Classification``,
stamped with the input's header, beside a copy of the input topics. Nothing is lost: the output
bag is closed in every case (an error, a corrupt bag, Ctrl-C or SIGTERM) and the summary says
where the replay stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmedge.errors import BagError, ConfigError, MmedgeError
from mmedge.robotics import convert
from mmedge.robotics.bag_io import InputPlan, OutputBag, open_reader, plan_inputs
from mmedge.robotics.predictor import MessagePredictor

__all__ = ["ReplayConfig", "Skip", "ReplaySummary", "replay", "check_modalities", "read_predictions", "BagError"]

MAX_SKIPS_KEPT = 1000  # skips kept with their reason; every one is counted


@dataclass(frozen=True)
class ReplayConfig:
    """What ``replay`` reads and how it pairs it.

    Attributes:
        image_topic: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic.
        audio_topic: ``audio_common_msgs/AudioData`` (or ``AudioDataStamped``) topic; one message is one clip,
            paired by stamp, unless ``audio_window`` is set.
        audio_window: Seconds of audio for each frame, from the chunks stamped up to the frame's
            stamp (audio recorded in short chunks); 0: one message is one clip.
        audio_info_topic: Its ``AudioInfo`` topic (None: every ``AudioInfo`` topic of the bag).
        text_topic: ``std_msgs/String`` captions, latest-text-wins.
        text: A fixed caption for every prediction (instead of ``text_topic``).
        queries: Open-vocabulary queries: each frame is scored against every one.
        queue_size: Messages per topic the synchronizer keeps.
        slop: Largest stamp spread (seconds) of a pair.
        prefix: Output topics are ``<prefix>/prediction`` and ``<prefix>/classification``.
        copy_inputs: Copy the input topics into the output bag (to view both side by side).
        storage: Output storage, ``"mcap"`` or ``"sqlite3"``.
    """

    image_topic: str | None = None
    audio_topic: str | None = None
    audio_info_topic: str | None = None
    audio_window: float = 0.0
    text_topic: str | None = None
    text: str | None = None
    queries: tuple[str, ...] = ()
    queue_size: int = 10
    slop: float = 0.05
    prefix: str = "/mmedge"
    copy_inputs: bool = True
    storage: str = "mcap"

    def __post_init__(self) -> None:
        if not (self.image_topic or self.audio_topic):
            raise ConfigError("replay needs --image-topic or --audio-topic (the messages predictions are made for)")
        if sum(bool(x) for x in (self.text_topic, self.text, self.queries)) > 1:
            raise ConfigError("pass one of --text-topic, --text or --query, not several")
        if self.audio_window < 0 or (self.audio_window and not (self.image_topic and self.audio_topic)):
            raise ConfigError("--audio-window takes seconds > 0 and needs both --image-topic and --audio-topic")
        if self.storage not in ("mcap", "sqlite3"):
            raise ConfigError(f"output storage must be 'mcap' or 'sqlite3', got {self.storage!r}")


@dataclass(frozen=True)
class Skip:
    """A message left out, with why: ``topic``, its bag time and the reason."""

    topic: str
    time_ns: int
    reason: str


@dataclass
class ReplaySummary:
    """What a replay did; ``last_time_ns``, ``error`` and ``interrupted`` say where and why it ended early."""

    bag: str
    output: str
    total: int = 0
    read: int = 0
    predictions: int = 0
    skipped: int = 0
    skips: list[Skip] = field(default_factory=list)
    unpaired: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    last_time_ns: int | None = None
    error: str | None = None
    interrupted: bool = False

    @property
    def fps(self) -> float:
        """Predictions per second of wall time."""
        return self.predictions / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """True when the whole bag was read."""
        return self.error is None and not self.interrupted

    def skip(self, topic: str, time_ns: int, reason: str) -> None:
        """Counts a skipped message (keeping the first ``MAX_SKIPS_KEPT`` with their reason)."""
        self.skipped += 1
        if len(self.skips) < MAX_SKIPS_KEPT:
            self.skips.append(Skip(topic, time_ns, reason))


def check_modalities(bundle: Any, config: ReplayConfig) -> None:
    """Refuses a config that leaves out a modality the bundle requires, or gives one it lacks.

    Raises:
        ConfigError: naming the modality and the flag that provides it.
    """
    given = {"image": bool(config.image_topic), "audio": bool(config.audio_topic),
             "text": bool(config.text_topic or config.text or config.queries)}
    flags = {"image": "--image-topic", "audio": "--audio-topic", "text": "--text-topic, --text or --query"}
    required = set(bundle.modalities) - set(bundle.optional_modalities)
    for modality, flag in flags.items():
        if modality in required and not given[modality]:
            raise ConfigError(f"bundle {bundle.name!r} needs {modality}: pass {flag}")
        if given[modality] and modality not in bundle.modalities:
            raise ConfigError(f"bundle {bundle.name!r} takes no {modality} (it takes {list(bundle.modalities)}); "
                              f"leave out {flag}")


def _feed(predictor: MessagePredictor, out: OutputBag, reader: Any, plan: InputPlan, summary: ReplaySummary,
          on_message: Callable[[ReplaySummary], None] | None) -> None:
    for conn, time_ns, raw in reader.messages(connections=plan.connections):
        summary.read += 1
        summary.last_time_ns = time_ns
        out.copy(conn, time_ns, raw, reader)
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any failure is this message's, recorded
            summary.skip(conn.topic, time_ns, f"corrupt {conn.msgtype} message ({type(e).__name__}: {e})")
        else:
            try:
                predictor.handle(conn.topic, time_ns, msg)
            except MmedgeError as e:  # MessageError, InputError, BundleError: this pair's, recorded
                summary.skip(conn.topic, time_ns, str(e))
        summary.predictions = predictor.predictions
        if on_message is not None:
            on_message(summary)


def replay(session: Any, bag: str | Path, output: str | Path, config: ReplayConfig, *,
           on_message: Callable[[ReplaySummary], None] | None = None) -> ReplaySummary:
    """Replays ``bag`` through ``session`` into the new bag ``output``.

    Args:
        session: A ``mmedge.runtime.Session``.
        bag: A rosbag2 folder (MCAP or sqlite3), a ``.mcap``/``.db3`` file's folder, or a ROS 1 ``.bag``.
        output: The output rosbag2 folder; it must not exist.
        config: Topics, pairing and output settings.
        on_message: Called after every message read (progress display).

    Returns:
        The ``ReplaySummary``. A bag that fails part-way (truncated, unreadable) or an interrupt
        (Ctrl-C, SIGTERM raised as ``KeyboardInterrupt``) ends the replay early: ``error`` /
        ``interrupted`` and ``last_time_ns`` say so, and the output bag is closed with every
        prediction made so far.

    Raises:
        BagError: the bag cannot be opened, or ``output`` exists.
        ConfigError: topics that leave out a modality the bundle requires, or give one it lacks.
        InputError: a topic the bag lacks (its topics listed) or of a type replay does not read.
    """
    check_modalities(session.bundle, config)
    summary = ReplaySummary(bag=str(bag), output=str(output))
    reader = open_reader(Path(bag))
    try:
        plan = plan_inputs(reader, config)
        summary.total = sum(c.msgcount for c in plan.connections)
        with OutputBag(Path(output), plan, config) as out:
            predictor = MessagePredictor(session, config, plan.roles, out.write_prediction)
            start = time.perf_counter()
            try:
                _feed(predictor, out, reader, plan, summary, on_message)
            except KeyboardInterrupt:
                summary.interrupted = True
            except Exception as e:  # noqa: BLE001 - a bag failing part-way: keep what was made, say where
                summary.error = f"the replay stopped ({type(e).__name__}: {e})"
            finally:
                summary.seconds = time.perf_counter() - start
                summary.predictions = predictor.predictions
                summary.unpaired = predictor.sync.pending()
                summary.dropped = dict(predictor.sync.dropped)
    finally:
        reader.close()
    return summary


def read_predictions(output: str | Path, prefix: str = "/mmedge") -> list[tuple[int, dict]]:
    """``(header stamp ns, payload)`` of every prediction in an output bag, in bag order."""
    reader = open_reader(Path(output))
    try:
        topic = f"{prefix}/prediction"
        conns = [c for c in reader.connections if c.topic == topic]
        out = []
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            payload = json.loads(msg.data)
            out.append((int(payload["stamp_ns"]), payload))
        return out
    finally:
        reader.close()

