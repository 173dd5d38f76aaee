"""``mmedge replay``: a rosbag through a bundle into an output bag of predictions (torch-free, ``[ros]``)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from mmedge.cli.console import console, err_console, fail
from mmedge.errors import MmedgeError
from mmedge.runtime.precisions import precision_names

PLAIN_INTERVAL_S = 5.0


class _Progress:
    """A rich bar on a terminal, a plain line every few seconds otherwise; stops the replay when asked."""

    def __init__(self, stop: "_StopRequest") -> None:
        self.last, self.stop = time.monotonic(), stop
        self.bar = None
        if sys.stdout.isatty() and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(console=err_console, transient=True)
            self.task = self.bar.add_task("replay", total=None)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, summary) -> None:
        self.stop.check()
        if self.bar is not None:
            self.bar.update(self.task, completed=summary.read, total=summary.total,
                            description=f"replay: {summary.predictions} predictions")
        elif time.monotonic() - self.last >= PLAIN_INTERVAL_S:
            self.last = time.monotonic()
            print(f"replay: {summary.read}/{summary.total} messages, {summary.predictions} predictions", flush=True)


class _StopRequest:
    """SIGINT/SIGTERM/SIGHUP ask the replay to stop after the message in hand (the bags stay consistent);
    a second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raises ``KeyboardInterrupt`` once a stop was asked for (called between messages)."""
        if self.requested:
            raise KeyboardInterrupt


def _print_summary(summary) -> None:
    console.print(f"read {summary.read} messages, [bold]{summary.predictions} predictions[/] "
                  f"({summary.fps:.1f}/s), {summary.skipped} skipped, unpaired {summary.unpaired}, "
                  f"dropped from full queues {summary.dropped}")
    for skip in summary.skips[:5]:
        console.print(f"  skipped {skip.topic} at {skip.time_ns}: {skip.reason}", markup=False)
    if not summary.complete:
        why = "interrupted" if summary.interrupted else summary.error
        console.print(f"[yellow]stopped early[/] ({why}) after bag time {summary.last_time_ns} ns; "
                      f"{summary.output} holds the {summary.predictions} predictions made so far", markup=False)
    console.print(f"wrote {summary.output}")


def replay(
    bundle: Path = typer.Argument(..., help="Bundle folder or .mmedge file."),
    bag: Path = typer.Argument(..., help="Input bag: a rosbag2 folder (MCAP or sqlite3) or a ROS 1 .bag file."),
    output: Path = typer.Option(..., "-o", "--output", help="Output rosbag2 folder (must not exist)."),
    image_topic: Optional[str] = typer.Option(None, help="sensor_msgs/Image or CompressedImage topic."),
    audio_topic: Optional[str] = typer.Option(None, help="audio_common_msgs/AudioData topic (one message = one clip)."),
    audio_info_topic: Optional[str] = typer.Option(None, help="Its AudioInfo topic (default: any in the bag)."),
    audio_window: float = typer.Option(0.0, help="Seconds of chunked audio before each frame (0: one message "
                                                 "= one clip, paired by stamp)."),
    text_topic: Optional[str] = typer.Option(None, help="std_msgs/String captions (latest text wins)."),
    text: Optional[str] = typer.Option(None, help="A fixed caption for every prediction."),
    query: Optional[List[str]] = typer.Option(None, help="Open-vocabulary query (repeatable)."),  # noqa: B008
    slop: float = typer.Option(0.05, help="Largest stamp spread of a pair, in seconds."),
    queue_size: int = typer.Option(10, help="Messages per topic the synchronizer keeps."),
    prefix: str = typer.Option("/mmedge", help="Output topics: PREFIX/prediction, PREFIX/classification."),
    storage: str = typer.Option("mcap", help="Output storage: mcap | sqlite3."),
    precision: str = typer.Option("fp32", help=f"A precision the bundle has: {' | '.join(precision_names())}."),
    backend: str = typer.Option("auto", help="auto | ort | ort-cuda | ort-trt | tensorrt"),
) -> None:
    """Replay a rosbag through a bundle; write its predictions, stamped like the inputs, into a new bag."""
    from mmedge.robotics.replayer import ReplayConfig, replay as run_replay
    from mmedge.runtime import Session

    stop = _StopRequest()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        config = ReplayConfig(image_topic=image_topic, audio_topic=audio_topic, audio_info_topic=audio_info_topic,
                              audio_window=audio_window, text_topic=text_topic, text=text,
                              queries=tuple(query or ()), slop=slop, queue_size=queue_size, prefix=prefix,
                              storage=storage)
        with Session(bundle, precision=precision, backend=backend) as session, _Progress(stop) as progress:
            summary = run_replay(session, bag, output, config, on_message=progress)
    except MmedgeError as e:
        fail(e)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    _print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.predictions == 0:
        err_console.print("no predictions: no messages paired (widen --slop or --queue-size, check the topics) "
                          "or every pair was skipped (reasons above)", markup=False)
    if summary.error or summary.predictions == 0:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Adds ``replay`` to ``app``."""
    app.command()(replay)
