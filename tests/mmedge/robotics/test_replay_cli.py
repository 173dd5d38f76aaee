"""``mmedge replay`` on the command line: the summary, the exit codes, and SIGTERM mid-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("rosbags")

from typer.testing import CliRunner  # noqa: E402

from mmedge.cli import app  # noqa: E402
from mmedge.robotics.replayer import read_predictions  # noqa: E402

from bags import reference_rows, write_bag  # noqa: E402

TOPICS = ["--image-topic", "/camera", "--audio-topic", "/audio", "--text-topic", "/caption", "--slop", "0.02"]


def test_cli_prints_the_summary(bundle_path, tmp_path):
    bag = write_bag(tmp_path / "in", reference_rows(4))
    result = CliRunner().invoke(app, ["replay", str(bundle_path), str(bag), "-o", str(tmp_path / "out"), *TOPICS])
    assert result.exit_code == 0, result.output
    assert "read 13 messages" in result.output and "4 predictions" in result.output
    assert len(read_predictions(tmp_path / "out")) == 4


def test_cli_no_pairs_and_missing_topic_exit_non_zero(bundle_path, tmp_path):
    bag = write_bag(tmp_path / "in", reference_rows(3), audio_shift_ns=45_000_000)
    result = CliRunner().invoke(app, ["replay", str(bundle_path), str(bag), "-o", str(tmp_path / "out"), *TOPICS])
    assert result.exit_code == 1 and "0 predictions" in result.output
    assert (tmp_path / "out" / "metadata.yaml").exists()
    result = CliRunner().invoke(app, ["replay", str(bundle_path), str(bag), "-o", str(tmp_path / "out2"),
                                      "--image-topic", "/nope", "--text", "x"])
    assert result.exit_code == 2 and "'/nope' is not in bag" in result.output


def test_sigterm_mid_run_leaves_a_valid_bag(bundle_path, tmp_path):
    bag = write_bag(tmp_path / "in", reference_rows(400))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mmedge", "replay", str(bundle_path), str(bag), "-o", str(out),
                             *TOPICS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not any(out.glob("*.mcap")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.8)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    got = read_predictions(out)
    assert 0 < len(got) < 400 and f"{len(got)} predictions" in stdout and "stopped early" in stdout
