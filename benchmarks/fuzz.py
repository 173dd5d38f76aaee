"""Property-based fuzzing of ``Session.predict`` and ``Bundle.open`` (hypothesis).

Four targets, each a hypothesis property whose only allowed outcomes are a valid ``Prediction``
or a typed ``mmedge`` error; any other exception, a crash or a hang (a watchdog per case) fails:

* ``predict``: arrays of any dtype, shape and values (NaN, Inf, huge), bytes, paths, unicode with
  lone surrogates, huge texts, any ``audio_rate`` / ``audio_layout`` / ``image_color_order``.
* ``manifest``: one to three mutations (delete, replace by random JSON, empty, wrap) anywhere in
  a valid manifest, or a truncated / bit-flipped ``manifest.json``; when the bundle opens, a
  Session is started and predicts.
* ``graph``: a graph file truncated, bit-flipped or replaced by garbage, with its hash updated in
  the manifest (so ONNX Runtime parses it) or not (so verification must catch it).
* ``zip``: ``.mmedge`` archives of random entries (unsafe names, links, duplicates, garbage) with
  or without the real bundle files.

The CI test (``tests/runtime/test_fuzz.py``) runs a few thousand cases on the micro bundle
(``fuzz_bundle.py``); this script runs many more and prints cases tried, outcomes by type and time:

    python benchmarks/fuzz.py [--cases 100000] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_bundle import build_micro_bundle  # noqa: E402

from mmedge.errors import MmedgeError  # noqa: E402
from mmedge.runtime import Bundle, Session  # noqa: E402
from mmedge.runtime.limits import Limits  # noqa: E402
from mmedge.runtime.modalities import modality_names  # noqa: E402

__all__ = ["Fuzzer", "STRATEGIES", "run_property", "run", "main"]

WEIGHTS = {"predict": 0.4, "manifest": 0.35, "graph": 0.1, "zip": 0.15}  # share of the cases per target
CASE_SECONDS = 30  # a case that takes longer is a hang


class Hang(BaseException):
    """A case ran past the watchdog."""


@contextlib.contextmanager
def watchdog(seconds: int = CASE_SECONDS):
    def fire(*_):
        raise Hang(f"a case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- strategies -------------------------------------------------------------------------------

_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=16)
_SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)
_ANY_ARRAY = hnp.arrays(st.sampled_from([np.int16, np.int64, np.uint16, np.bool_, np.complex64, np.float16]), _SHAPES)
_JUNK = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.dictionaries(st.text(max_size=3), st.none()),
                  st.just(object()), st.just(np.array([None, "x"], dtype=object)))

_WORDS = st.lists(st.sampled_from(["a", "cat", "dog", "photo", "seven", "of", "the"]), min_size=1, max_size=6).map(" ".join)
_SINE = st.integers(0, 2**32 - 1).map(lambda s: (np.random.default_rng(s).standard_normal(4000) * 0.1).astype(np.float32))

def _png(array: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", array)[1].tobytes()


def _bomb_png(side: int) -> bytes:
    """A PNG header that claims ``side`` x ``side`` pixels."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + side.to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" + b"\x00" * 8


_UINT8_IMAGES = hnp.arrays(np.uint8, st.one_of(st.tuples(st.integers(1, 24), st.integers(1, 24)),
                                               st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4]))))
_IMAGE = st.one_of(
    _UINT8_IMAGES, _UINT8_IMAGES.map(_png), _UINT8_IMAGES.map(lambda a: _png(a)[: len(_png(a)) // 2]),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3)), elements=_FLOATS),
    _ANY_ARRAY, st.binary(max_size=64), st.integers(1, 10**6).map(_bomb_png),
    st.sampled_from(["/nonexistent.png", "/", "/dev/null", __file__]), _JUNK)
_TEXT = st.one_of(
    _WORDS,
    st.text(st.characters(exclude_categories=()), max_size=30), st.integers(9_990, 12_000).map(lambda n: "x" * n),
    st.binary(max_size=8), _JUNK)
_WAVE_SHAPES = st.one_of(st.tuples(st.integers(0, 5000)), st.tuples(st.integers(1, 4), st.integers(1, 3000)),
                         st.tuples(st.integers(1, 3000), st.integers(1, 4)), _SHAPES)
_AUDIO = st.one_of(
    _SINE,
    hnp.arrays(st.sampled_from([np.float32, np.float64]), _WAVE_SHAPES, elements=_FLOATS),
    hnp.arrays(st.sampled_from([np.int16, np.int32, np.uint8, np.complex64, np.bool_]), _WAVE_SHAPES),
    st.sampled_from(["/nonexistent.wav", __file__]), _JUNK)


def _batch(item: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), item, st.lists(item, max_size=3), st.tuples(item, item))


_VALID = {"image": _UINT8_IMAGES.filter(lambda a: a.ndim == 2 or a.shape[2] != 4) | _UINT8_IMAGES.map(_png),
          "text": _WORDS, "audio": st.none() | _SINE, "audio_rate": st.sampled_from([16000, 8000, 44100, 22050]),
          "audio_layout": st.none(), "image_color_order": st.sampled_from(["RGB", "BGR"])}
_WILD = {"image": _batch(_IMAGE), "text": _batch(_TEXT), "audio": _batch(_AUDIO),
         "audio_rate": st.one_of(st.none(), st.integers(-5, 10**9), st.floats(), st.booleans(), st.text(max_size=3)),
         "audio_layout": st.one_of(st.none(), st.sampled_from(["channels_first", "channels_last", "planar"])),
         "image_color_order": st.sampled_from(["RGB", "BGR", "rgb", ""])}


@st.composite
def _predict_kwargs(draw) -> dict[str, Any]:
    """Valid arguments with 0, 1, 2 or all fields replaced by wild values."""
    batch = draw(st.integers(1, 3))
    kwargs = {k: draw(v) for k, v in _VALID.items()}
    for key in modality_names():
        if kwargs.get(key) is not None and batch > 1:
            kwargs[key] = [kwargs[key]] * batch
    wild = draw(st.sampled_from([(), (), ("image",), ("text",), ("audio", "audio_rate"), ("audio_layout",),
                                 ("image_color_order",), tuple(_WILD)]))
    kwargs.update({k: draw(_WILD[k]) for k in wild})
    return kwargs


PREDICT = _predict_kwargs()
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=8), st.sampled_from(["../x.onnx", "/etc/passwd", "fp32", "image", "audio", "ok", "logits",
                                                    "soft_vote", "majority_vote", "a" * 64, "mmedge.bundle/2"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
MANIFEST = st.one_of(
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["delete", "replace", "empty", "wrap"]), _JSON),
             min_size=1, max_size=3),
    st.tuples(st.sampled_from(["truncate", "flip"]), st.integers(0, 10**6), st.integers(0, 7)))
GRAPH = st.tuples(st.integers(0, 4), st.sampled_from(["truncate", "flip", "garbage"]),
                  st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8),
                  st.binary(max_size=64), st.booleans())
_NAMES = st.one_of(st.sampled_from(["manifest.json", "../evil", "/abs", "a\\b", "C:x", "dir/", "x/../../y", "a\x00b"]),
                   st.text(max_size=12))
ZIP = st.tuples(st.booleans(), st.lists(st.tuples(_NAMES, st.binary(max_size=64), st.booleans(), st.booleans()),
                                         max_size=5), st.booleans())
STRATEGIES = {"predict": PREDICT, "manifest": MANIFEST, "graph": GRAPH, "zip": ZIP}


def run_property(check, strategy: st.SearchStrategy, examples: int, *, seed: int | None = None) -> None:
    """Runs ``check(case)`` on ``examples`` cases drawn from ``strategy``: derandomized (the same cases
    every run) unless ``seed`` is given; no deadline (the watchdog catches hangs), no example database."""
    def prop(case: Any) -> None:
        check(case)

    test = settings(max_examples=examples, deadline=None, derandomize=seed is None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)(given(strategy)(prop))
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    test()


# -- the properties -------------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree, the root included."""
    out = [prefix]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out += _paths(child, prefix + (key,))
    return out


def _mutate(manifest: dict, index: int, kind: str, value: Any) -> dict:
    paths = _paths(manifest)[1:]
    path = paths[index % len(paths)]
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = {"replace": value, "wrap": [old], "empty": type(old)() if isinstance(old, (dict, list, str)) else None}[kind]
    return manifest


class Fuzzer:
    """The micro bundle, a Session on it, and one ``check_<target>`` per target.

    Each check returns the outcome's name (``"Prediction"``, ``"Bundle"`` or a ``mmedge`` error class)
    and counts it in ``outcomes``; any other exception propagates: that is a bug.
    """

    def __init__(self, folder: Path, backend: str = "ort") -> None:
        self.backend = backend  # fixed, not "auto": a finding replays on the backend it was found on
        self.base = build_micro_bundle(folder / "micro")
        self.manifest = json.loads((self.base / "manifest.json").read_text())
        self.session = Session(self.base, backend=backend, threads=1)
        self.scratch = folder / "scratch"
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def close(self) -> None:
        self.session.close()

    def _count(self, target: str, outcome: str) -> str:
        self.outcomes[(target, outcome)] += 1
        return outcome

    @staticmethod
    def _valid(pred, labels: tuple[str, ...]) -> str:
        """Checks a prediction against the bundle's labels; returns ``"Prediction"``."""
        probs = pred.probabilities
        assert probs.dtype == np.float32 and probs.ndim == 2 and probs.shape[1] == len(labels), probs.shape
        assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), probs
        assert pred.indices.tolist() == probs.argmax(axis=1).tolist()
        assert pred.labels == [labels[i] for i in pred.indices]
        assert all(np.isfinite(p).all() and p.shape == probs.shape for p in pred.member_probabilities.values())
        return "Prediction"

    def _outcome(self, target: str, run) -> str:
        try:
            with watchdog():
                return self._count(target, run())
        except MmedgeError as exc:
            return self._count(target, type(exc).__name__)

    def check_predict(self, kwargs: dict[str, Any]) -> str:
        """``Session.predict`` on arbitrary arguments."""
        given = {k: v for k, v in kwargs.items() if v is not None}
        labels = self.session.bundle.labels
        return self._outcome("predict", lambda: self._valid(self.session.predict(**given), labels))

    def _fresh_folder(self, *, copy_graphs: bool = False) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.copytree(self.base, self.scratch, copy_function=shutil.copy2 if copy_graphs else _link)
        (self.scratch / "manifest.json").unlink()
        return self.scratch

    def _open_and_run(self, source: Path, verify: bool = True, limits: Limits | None = None) -> str:
        with Bundle.open(source, verify=verify, limits=limits) as bundle, \
                Session(bundle, backend=self.backend, threads=1) as session:
            rng = np.random.default_rng(0)
            pred = session.predict(image=rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), text="a cat",
                                   audio=np.zeros(4000, np.float32), audio_rate=16000)
            return self._valid(pred, bundle.labels)

    def check_manifest(self, mutation: Any) -> str:
        """``Bundle.open`` (then a Session and a prediction) on a mutated manifest."""
        folder = self._fresh_folder()
        text = json.dumps(self.manifest).encode()
        if isinstance(mutation, tuple):  # damage the bytes
            kind, at, bit = mutation
            data = bytearray(text)
            data = data[: at % len(data)] if kind == "truncate" else data
            if kind == "flip":
                data[at % len(data)] ^= 1 << bit
            (folder / "manifest.json").write_bytes(bytes(data))
        else:
            manifest = copy.deepcopy(self.manifest)
            for index, kind, value in mutation:
                manifest = _mutate(manifest, index, kind, value)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        verify = zlib.crc32(repr(mutation).encode()) % 2 == 0
        return self._outcome("manifest", lambda: self._open_and_run(folder, verify=verify))

    def check_graph(self, case: tuple) -> str:
        """A Session on a bundle whose graph was truncated, bit-flipped or replaced."""
        which, kind, flips, garbage, rehash = case
        folder = self._fresh_folder(copy_graphs=True)
        manifest = copy.deepcopy(self.manifest)
        rel = sorted(r for r in manifest["files"] if r.endswith(".onnx"))[which % 5]
        data = bytearray((folder / rel).read_bytes())
        if kind == "truncate":
            data = data[: flips[0][0] % len(data)]
        elif kind == "flip":
            for at, bit in flips:
                data[at % len(data)] ^= 1 << bit
        else:
            data = bytearray(garbage)
        (folder / rel).write_bytes(bytes(data))
        if rehash:
            _rehash(manifest, rel, bytes(data))
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return self._outcome("graph", lambda: self._open_and_run(folder))

    def check_zip(self, case: tuple) -> str:
        """``Bundle.open`` on a ``.mmedge`` of random entries, with or without the real files."""
        real, entries, deflate = case
        archive = self.scratch.with_suffix(".mmedge")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
            if real:
                for path in sorted(p for p in self.base.rglob("*") if p.is_file()):
                    zf.write(path, path.relative_to(self.base).as_posix())
            for name, data, link, directory in entries:
                info = zipfile.ZipInfo(name + ("/" if directory else ""))
                info.external_attr = (0o120777 if link else 0o100644) << 16
                with contextlib.suppress(ValueError):
                    zf.writestr(info, data)
        return self._outcome("zip", lambda: self._open_and_run(archive, limits=Limits(max_zip_bytes=2**20,
                                                                                      max_zip_members=64)))


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)


def _rehash(manifest: dict, rel: str, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    manifest["files"][rel] = digest
    for owner in [*manifest["encoders"].values(), *manifest["members"]]:
        for entry in owner["graphs"].values():
            if entry.get("file") == rel:
                entry.update(sha256=digest, bytes=len(data))


# -- the long run -------------------------------------------------------------------------


def run(cases: int, *, seed: int = 0, folder: Path | None = None, targets: tuple[str, ...] = tuple(WEIGHTS),
        backend: str = "ort") -> dict[str, Any]:
    """Runs about ``cases`` cases split over ``targets`` by ``WEIGHTS`` on ``backend``; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        fuzzer = Fuzzer(Path(folder or tmp), backend)
        start = time.perf_counter()
        try:
            for target in targets:
                share = WEIGHTS[target] / sum(WEIGHTS[t] for t in targets)
                run_property(getattr(fuzzer, f"check_{target}"), STRATEGIES[target], max(1, int(cases * share)), seed=seed)
                print(f"{target}: {sum(n for (t, _), n in fuzzer.outcomes.items() if t == target)} cases, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
        finally:
            fuzzer.close()
    by_target: dict[str, dict[str, int]] = {}
    for (target, outcome), n in sorted(fuzzer.outcomes.items()):
        by_target.setdefault(target, {})[outcome] = n
    return {"cases": sum(fuzzer.outcomes.values()), "seconds": round(time.perf_counter() - start, 1),
            "outcomes": by_target, "seed": seed, "backend": backend}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="Cases over all targets.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(WEIGHTS), help=f"Comma-separated subset of {list(WEIGHTS)}.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--backend", default="ort", help="The runtime backend fuzzed (a name, not auto: findings replay).")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    if not targets or set(targets) - set(WEIGHTS):
        parser.error(f"--targets takes names among {list(WEIGHTS)}, got {args.targets!r}")
    figures = run(args.cases, seed=args.seed, targets=targets, backend=args.backend)
    print(json.dumps(figures, indent=2))
    if args.json:
        described = {"schema": "mmedge.fuzz/1", "command": " ".join(["python", *sys.argv]),
                     "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
        args.json.write_text(json.dumps(described, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
