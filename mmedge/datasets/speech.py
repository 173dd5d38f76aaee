"""Spoken words synthesized offline with Debian's ``espeak-ng`` (a subprocess), cached.

Every clip is trimmed of leading/trailing silence and resampled to the target rate
with :func:`mmedge.runtime.preprocess.resample`. espeak-ng's output is
deterministic for a given voice, speed, pitch and text.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from mmedge.atomic import atomic_file
from mmedge.errors import DataError
from mmedge.runtime.preprocess import resample

__all__ = ["VoiceSetting", "synthesize", "voice_settings", "speak_pool", "trim_silence"]

SPEECH_VERSION = "speech/1"
# Base voices whose variants espeak-ng honours (en-gb ignores "+variant"; en-us-nyc == en-us).
BASE_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "Andy", "steph", "aunty", "grandpa", "Storm",
)


@dataclass(frozen=True)
class VoiceSetting:
    """One espeak-ng speaking style.

    Attributes:
        voice: espeak-ng voice with variant, e.g. "en-us+f2".
        speed: Words per minute (``-s``).
        pitch: Pitch 0..99 (``-p``).
    """

    voice: str
    speed: int
    pitch: int


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(
            "espeak-ng is not installed; it synthesizes the spoken digits. "
            "Install it (Debian/Ubuntu: apt-get install espeak-ng) and try again."
        )
    return exe


def synthesize(text: str, setting: VoiceSetting, *, sample_rate: int = 16000) -> np.ndarray:
    """Speaks ``text`` with espeak-ng and returns the trimmed mono float32 wave.

    Args:
        text: The words to speak.
        setting: Voice, speed and pitch.
        sample_rate: Output rate in Hz (espeak-ng speaks at 22050 Hz).

    Raises:
        DataError: espeak-ng is missing or failed.
    """
    cmd = [_espeak(), "-v", setting.voice, "-s", str(setting.speed), "-p", str(setting.pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise DataError(f"espeak-ng failed for {setting} ({proc.stderr.decode(errors='replace')[:200]}); "
                        "check `espeak-ng --voices=en`.")
    wave, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    wave = wave if wave.ndim == 1 else wave.mean(axis=1)
    return trim_silence(resample(wave, rate, sample_rate))


def trim_silence(wave: np.ndarray, *, rel_threshold: float = 0.02) -> np.ndarray:
    """Drops leading and trailing samples quieter than ``rel_threshold`` x peak."""
    loud = np.nonzero(np.abs(wave) > rel_threshold * (np.abs(wave).max() + 1e-12))[0]
    if loud.size == 0:
        return wave.astype(np.float32)
    return wave[loud[0]:loud[-1] + 1].astype(np.float32)


def voice_settings(
    n: int, *, seed: int, speed_range: tuple[int, int] = (120, 220), pitch_range: tuple[int, int] = (20, 80)
) -> list[VoiceSetting]:
    """``n`` distinct voice/variant combinations, each with a random speed and pitch."""
    combos = [f"{v}+{var}" for v in BASE_VOICES for var in VARIANTS]
    if n > len(combos):
        raise DataError(f"asked for {n} distinct voices; at most {len(combos)} are available")
    rng = np.random.default_rng([seed, 7001])
    picks = rng.permutation(len(combos))[:n]
    speeds = rng.integers(speed_range[0], speed_range[1] + 1, size=n)
    pitches = rng.integers(pitch_range[0], pitch_range[1] + 1, size=n)
    return [VoiceSetting(combos[p], int(s), int(q)) for p, s, q in zip(picks, speeds, pitches)]


def speak_pool(
    words: Sequence[str],
    settings: Sequence[VoiceSetting],
    *,
    cache_dir: Path,
    sample_rate: int = 16000,
    workers: int = 4,
) -> list[list[np.ndarray]]:
    """Speaks every word with every setting; cached as one .npz under ``cache_dir/speech``.

    Args:
        words: The words (e.g. "zero".."nine").
        settings: The speaking styles; clip ``j`` of each word uses ``settings[j]``.
        cache_dir: Cache root.
        sample_rate: Output rate in Hz.
        workers: Parallel espeak-ng processes.

    Returns:
        ``pool[i][j]``: word ``i`` spoken with setting ``j`` (mono float32, trimmed).
    """
    key = json.dumps([SPEECH_VERSION, list(words), [asdict(s) for s in settings], sample_rate])
    path = Path(cache_dir) / "speech" / f"pool-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        try:
            return _load_pool(path, len(words), len(settings))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    jobs = [(w, s) for w in words for s in settings]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        clips = list(ex.map(lambda job: synthesize(job[0], job[1], sample_rate=sample_rate), jobs))
    _save_pool(path, clips)
    return [clips[i * len(settings):(i + 1) * len(settings)] for i in range(len(words))]


def _save_pool(path: Path, clips: list[np.ndarray]) -> None:
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    with atomic_file(path) as f:
        np.savez(f, lengths=lengths, samples=np.concatenate(clips).astype(np.float32))


def _load_pool(path: Path, n_words: int, n_settings: int) -> list[list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        lengths, samples = z["lengths"], z["samples"]
    if len(lengths) != n_words * n_settings:
        raise ValueError("speech cache entry has the wrong size")
    clips = np.split(samples, np.cumsum(lengths)[:-1])
    return [clips[i * n_settings:(i + 1) * n_settings] for i in range(n_words)]
