"""Writes ``tests/export/data/tensorrt_api.json``: the Python API of TensorRT per version, class by class,
read from the pybind11 binding sources of NVIDIA's TensorRT repository (``python/src``).

    python tests/export/trt_api_tables.py PATH/TO/TensorRT.git   # a clone or bare mirror with its tags

For each ``py::class_<T, Bases...>(scope, "Name", ...)`` / ``py::enum_<T>(scope, "Name", ...)``
it records the names bound on it (``.def("x"``, ``.def_property*("x"``, ``.def_read*("x"``,
``.value("X"``) plus those of its bound base classes, and an enum's values in its parent class when
it ``export_values()`` there (``trt.Logger.WARNING``). ``tests/export/test_trt_api.py`` checks mmedge's
TensorRT calls against these tables, per class, and each table entry it relies on against the
strings of that version's real bindings binary, so a stale table cannot pass a name.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# TensorRT version of the bindings wheel -> the git ref of its binding sources (11.4's are not
# public yet: the newest 11.x sources stand in, and the binary check catches what differs).
REFS = {"10.3.0": "v10.3.0", "10.13.3.9": "release/10.13", "11.4.0.106": "v11.1"}
OUT = Path(__file__).with_name("data") / "tensorrt_api.json"
_DECL = re.compile(r"py::(class_|enum_)<\s*([\w:]+)((?:[^;{(]*?))>\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*\"(\w+)\"")
_MEMBER = re.compile(r"(\w+)?\.(?:def|def_property|def_property_readonly|def_readwrite|def_readonly|def_static|value)"
                     r"\(\s*\"(\w+)\"")
_MODULE_DEF = re.compile(r"\bm\.def\(\s*\"(\w+)\"")


def _sources(repo: Path, ref: str) -> str:
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", ref, "python/src"],
                           capture_output=True, text=True, check=True).stdout.split()
    return "\n".join(subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{n}"], capture_output=True, text=True,
                                    check=True).stdout for n in names if n.endswith(".cpp"))


def tables(source: str) -> dict[str, list[str]]:
    """Python class name -> its bound names (bases included), ``"<module>"`` -> module-level functions."""
    decls = list(_DECL.finditer(source))
    cpp_to_py = {d.group(2).split("::")[-1]: d.group(6) for d in decls}
    var_to_py = {d.group(4): d.group(6) for d in decls if d.group(4)}
    members: dict[str, set[str]] = {d.group(6): set() for d in decls}
    bases: dict[str, list[str]] = {}
    for i, decl in enumerate(decls):
        name, end = decl.group(6), decls[i + 1].start() if i + 1 < len(decls) else len(source)
        body = source[decl.end():end]
        bases[name] = [cpp_to_py[b.strip().split("::")[-1]] for b in decl.group(3).split(",")
                       if b.strip().split("::")[-1] in cpp_to_py]
        for var, member in _MEMBER.findall(body):
            members[var_to_py.get(var, name) if var else name].add(member)
        if decl.group(1) == "enum_" and "export_values()" in body and decl.group(5) in var_to_py:
            members[var_to_py[decl.group(5)]] |= members[name]
    out = {name: sorted(_with_bases(name, members, bases, set())) for name in sorted(members)}
    out["<module>"] = sorted(set(_MODULE_DEF.findall(source)))
    return out


def _with_bases(name: str, members: dict[str, set[str]], bases: dict[str, list[str]], seen: set[str]) -> set[str]:
    if name in seen:
        return set()
    seen.add(name)
    found = set(members.get(name, ()))
    for base in bases.get(name, ()):
        found |= _with_bases(base, members, bases, seen)
    return found


def main(repo: Path) -> None:
    data = {version: tables(_sources(repo, ref)) for version, ref in REFS.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"refs": REFS, "tables": data}, indent=0, sort_keys=True) + "\n")
    print(f"wrote {OUT}: {', '.join(f'{v} ({len(t)} classes)' for v, t in data.items())}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
