"""Loading is data only: the runtime reads bundles with ``json.loads``, numpy without pickle and ONNX
Runtime from bytes; nothing in it can unpickle, eval or import what a bundle holds (issue 11)."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from mmedge.errors import BundleError
from mmedge.runtime import Bundle

REPO = Path(__file__).resolve().parents[2]
# pattern -> why it is forbidden in the runtime
FORBIDDEN = {
    r"\bpickle\b|\bcPickle\b|\bdill\b|\bjoblib\b": "unpickling runs code",
    r"(?<![.\w])(eval|exec|compile)\(": "eval/exec of text",
    r"\bmarshal\b|\bshelve\b": "code or pickle containers",
    r"\byaml\b": "YAML loaders can build objects",
    r"allow_pickle\s*=\s*True": "numpy pickles",
    r"__import__\(|\brunpy\b|spec_from_file_location": "importing code by name or path",
    r"^\s*(import|from)\s+(torch|onnx|nncf)\b": "the runtime never imports torch, onnx or nncf",
}
# import their own modules: by fixed names, and every module of the backends folder (each registers a backend)
LAZY_IMPORTS = {"runtime/__init__.py", "runtime/backends/__init__.py"}


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("pattern", list(FORBIDDEN))
def test_runtime_has_no_code_loading(pattern):
    hits = []
    for path in _sources("runtime"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code, flags=re.M):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, f"{FORBIDDEN[pattern]}: {hits}"


def test_import_module_only_for_the_runtimes_own_modules():
    for path in _sources("runtime"):
        if "import_module(" in path.read_text():
            assert path.relative_to(REPO).as_posix() in LAZY_IMPORTS


def test_every_torch_load_is_weights_only():
    calls = []
    for folder in ("mmedge", "export", "runtime", "benchmarks", "examples"):
        for path in _sources(folder):
            text = path.read_text()
            for match in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
                calls.append((path.relative_to(REPO).as_posix(), match.group(0)))
    assert calls, "no torch.load found: the pattern is broken"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


def test_a_pickled_manifest_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("x",))

    (tmp_path / "manifest.json").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(tmp_path)
    assert not marker.exists()
