"""benchmarks/pretrained_reference.py: families measured by separate runs merge into one report, each
family keeping the command and date that measured it, and RESULTS.md shows them per family."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
from render import render_results  # noqa: E402  (benchmarks/render.py)

_spec = importlib.util.spec_from_file_location("pretrained_reference", BENCH / "pretrained_reference.py")
pr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pr)


def _family(cls: str, export_s: float) -> dict:
    stats = {"p50": 1.5, "p90": 2.0}
    return {"class": cls, "query": "image", "export_s": export_s, "bundle_bytes": {"fp32": 2**20, "int8": 2**19},
            "latency_ms": {"1": {"mmedge fp32 image": stats}, "8": {"mmedge fp32 image": stats}},
            "footprint": {"fp32": {"rss_after_predict_bytes": 3 * 2**20}}}


def _report(command: str, date: str, **families) -> dict:
    return {"schema": pr.SCHEMA, "command": command, "created_utc": date, "threads": 2, "iters": 8,
            "weights": "random (speed and memory only)", "families": families}


def test_later_families_replace_earlier_ones_and_keep_their_own_run():
    old = _report("python benchmarks/pretrained_reference.py --family clip,siglip", "2026-12-01 10:00 UTC",
                  clip=_family("CLIPModel", 10.0), siglip=_family("SiglipModel", 11.0))
    new = _report("python benchmarks/pretrained_reference.py --family siglip,clap", "2026-12-03 16:00 UTC",
                  siglip=_family("SiglipModel", 99.0), clap=_family("ClapModel", 12.0))
    merged = pr.merge_reports([old, new])
    assert list(merged["families"]) == ["clip", "siglip", "clap"]
    assert merged["families"]["siglip"]["export_s"] == 99.0
    assert merged["families"]["clip"]["command"] == old["command"]
    assert merged["families"]["clip"]["created_utc"] == "2026-12-01 10:00 UTC"
    assert merged["families"]["clap"]["command"] == new["command"]
    assert pr.merge_reports([merged])["families"] == merged["families"]  # merging again changes nothing


def test_a_report_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="pretrained_reference"):
        pr.merge_reports([{"schema": "mmedge.bench/1", "families": {}}])


def test_combine_merges_files_into_out_and_results_md_shows_each_familys_command(tmp_path):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "merged.json"
    a.write_text(json.dumps(_report("cmd-a", "2026-12-01 10:00 UTC", clip=_family("CLIPModel", 10.0))))
    b.write_text(json.dumps(_report("cmd-b", "2026-12-03 16:00 UTC", clap=_family("ClapModel", 12.0))))
    assert pr.main(["--combine", str(a), "-o", str(out)]) == 0
    assert pr.main(["--combine", str(b), "--merge", "-o", str(out)]) == 0  # --merge keeps what out held
    merged = json.loads(out.read_text())
    assert [f["command"] for f in merged["families"].values()] == ["cmd-a", "cmd-b"]
    md = render_results([out], root=tmp_path)
    for family, command, date in (("clip", "cmd-a", "2026-12-01"), ("clap", "cmd-b", "2026-12-03")):
        section = md[md.index(f"### {family}"):]
        assert section.index(command) < section.index(date) < section.index("random weights: speed and memory only")
        assert "shared with other jobs" in section
