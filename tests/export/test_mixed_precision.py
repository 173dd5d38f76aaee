"""The ``mixed`` selection: fastest graphs first, then the least faithful back to fp32 until the
ensemble is within the budget (the evaluation here is a table; the export test runs the real one)."""
from __future__ import annotations

from mmedge.export.components import Component
from mmedge.export.mixed_precision import MIXED, choose_mixed, fastest
from mmedge.runtime.manifest import GraphEntry


def _comp(key: str, int8_cosine: float) -> Component:
    comp = Component(key, key.replace(".", "s/"), module=None, kind=key.split(".")[0])
    comp.graphs = {"fp32": GraphEntry(file=f"{key}.fp32.onnx", parity={}),
                   "int8": GraphEntry(file=f"{key}.int8.onnx", fidelity={"min_cosine": int8_cosine})}
    return comp


def test_fastest_prefers_fp32_on_a_tie():
    assert fastest({"fp32": 2.0, "int8": 1.0}) == "int8"
    assert fastest({"int8": 1.0, "fp32": 1.0}) == "fp32"


def test_least_faithful_component_goes_back_first_until_within_budget():
    comps = [_comp("encoder.text", 0.99), _comp("encoder.image", 0.95), _comp("head.concat", 0.999)]
    latencies = {c.key: {"fp32": 3.0, "int8": 1.0} for c in comps}
    latencies["head.concat"] = {"fp32": 0.1, "int8": 0.2}  # int8 slower: fp32 from the start
    # the drop is 1 point per int8 encoder
    evaluate = lambda: ({"ensemble": 0.9}, float(sum(c.graphs[MIXED].chosen == "int8" for c in comps)))  # noqa: E731
    report, choice = choose_mixed(comps, latencies, evaluate, max_drop=1.0)
    assert choice == {"encoder.text": "int8", "encoder.image": "fp32", "head.concat": "fp32"}
    assert report.drop == 1.0 and len(report.steps) == 1 and "kept encoder.image in fp32" in str(report.steps[0])
    assert report.steps[0].was == ("int8",) and report.within_budget
    assert comps[1].graphs[MIXED].file == "encoder.image.fp32.onnx"
    assert comps[2].graphs[MIXED].parity is None and comps[2].graphs[MIXED].latency_ms_batch1["int8"] == 0.2


def test_everything_back_in_fp32_stops_the_search():
    comps = [_comp("encoder.text", 0.9)]
    report, choice = choose_mixed(comps, {"encoder.text": {"fp32": 2.0, "int8": 1.0}},
                                  lambda: ({"ensemble": 0.5}, 5.0), max_drop=1.0)
    assert choice == {"encoder.text": "fp32"} and report.drop == 5.0 and report.all_reference
