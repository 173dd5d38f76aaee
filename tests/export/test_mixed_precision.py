"""The ``mixed`` selection: fastest graphs first, then the least faithful back to fp32 until the
ensemble is within the budget (the evaluation here is a table; the export test runs the real one)."""
from __future__ import annotations

from mmedge.export.components import Component
from mmedge.export.mixed_precision import MIXED, candidate_key, choose_mixed, fastest, split_key
from mmedge.runtime.manifest import GraphEntry


def _comp(key: str, int8_cosine: float) -> Component:
    comp = Component(key, key.replace(".", "s/"), module=None, kind=key.split(".")[0])
    comp.graphs = {"fp32": GraphEntry(file=f"{key}.fp32.onnx", parity={}),
                   "int8": GraphEntry(file=f"{key}.int8.onnx", fidelity={"min_cosine": int8_cosine})}
    return comp


def test_fastest_prefers_fp32_on_a_tie():
    assert fastest({"fp32": 2.0, "int8": 1.0}) == "int8"
    assert fastest({"int8": 1.0, "fp32": 1.0}) == "fp32"


def test_a_candidate_faster_at_batch_1_but_much_slower_at_a_larger_batch_is_not_the_fastest():
    """OpenVINO's int8 text encoder here: 1.6 vs 1.7 ms at batch 1, 1.5 vs 0.65 ms per row at batch 7."""
    timed = {"1": {"fp32": 3.0, "int8": 1.7, "int8@openvino": 1.6},
             "7": {"fp32": 1.1, "int8": 0.65, "int8@openvino": 1.5}}
    assert fastest(timed) == "int8"  # worst slowdown 1.06x against 2.3x
    assert fastest({"1": timed["1"]}) == fastest(timed["1"]) == "int8@openvino"  # batch 1 alone: the fastest there
    assert fastest({"1": {"fp32": 1.0, "int8": 1.0}, "7": {"fp32": 1.0, "int8": 1.0}}) == "fp32"


def test_least_faithful_component_goes_back_first_until_within_budget():
    comps = [_comp("encoder.text", 0.99), _comp("encoder.image", 0.95), _comp("head.concat", 0.999)]
    latencies = {c.key: {"1": {"fp32": 3.0, "int8": 1.0}} for c in comps}
    latencies["head.concat"] = {"1": {"fp32": 0.1, "int8": 0.2}}  # int8 slower: fp32 from the start
    # the drop is 1 point per int8 encoder
    evaluate = lambda: ({"ensemble": 0.9}, float(sum(c.graphs[MIXED].chosen == "int8" for c in comps)))  # noqa: E731
    report, choice = choose_mixed(comps, latencies, evaluate, max_drop=1.0)
    assert choice == {"encoder.text": "int8", "encoder.image": "fp32", "head.concat": "fp32"}
    assert report.drop == 1.0 and len(report.steps) == 1 and "kept encoder.image in fp32" in str(report.steps[0])
    assert report.steps[0].was == ("int8",) and report.within_budget
    assert comps[1].graphs[MIXED].file == "encoder.image.fp32.onnx"
    assert comps[2].graphs[MIXED].parity is None and comps[2].graphs[MIXED].latency_ms_batch1["int8"] == 0.2
    assert comps[2].graphs[MIXED].latency_ms_per_row == {"1": {"fp32": 0.1, "int8": 0.2}}


def test_everything_back_in_fp32_stops_the_search():
    comps = [_comp("encoder.text", 0.9)]
    report, choice = choose_mixed(comps, {"encoder.text": {"1": {"fp32": 2.0, "int8": 1.0}}},
                                  lambda: ({"ensemble": 0.5}, 5.0), max_drop=1.0)
    assert choice == {"encoder.text": "fp32"} and report.drop == 5.0 and report.all_reference


def test_a_graph_faster_on_another_backend_is_chosen_there_and_reverted_to_its_fastest_fp32():
    """Issue 18 item 5: ``<precision>@<backend>`` candidates; the entry records the precision and the backend."""
    assert candidate_key("int8", "openvino") == "int8@openvino" and candidate_key("int8", "ort") == "int8"
    assert split_key("int8@openvino") == ("int8", "openvino") and split_key("fp32") == ("fp32", None)
    comps = [_comp("encoder.text", 0.99), _comp("encoder.image", 0.95)]
    latencies = {"encoder.text": {"1": {"fp32": 3.0, "int8": 2.0, "int8@openvino": 1.2, "fp32@openvino": 2.5}},
                 "encoder.image": {"1": {"fp32": 1.5, "int8": 1.0, "fp32@openvino": 0.9}}}
    seen = []

    def evaluate():  # over budget until the text encoder (the one graph off fp32's file) goes back
        seen.append({c.key: (c.graphs[MIXED].chosen, c.graphs[MIXED].backend) for c in comps})
        return {"ensemble": 0.9}, 2.0 if seen[-1]["encoder.text"][0] == "int8" else 0.5

    report, choice = choose_mixed(comps, latencies, evaluate, max_drop=1.0)
    assert seen[0] == {"encoder.text": ("int8", "openvino"), "encoder.image": ("fp32", "openvino")}
    assert comps[0].graphs[MIXED].file == "encoder.text.fp32.onnx"  # reverted to fp32, where fp32 is fastest
    assert seen[1]["encoder.text"] == ("fp32", "openvino") and choice["encoder.text"] == "fp32@openvino"
    # fp32 on OpenVINO (fp32's file) is never reduced, so never reverted: it keeps its backend
    assert choice["encoder.image"] == "fp32@openvino" and comps[1].graphs[MIXED].backend == "openvino"
    assert [s.components for s in report.steps] == [("encoder.text",)] and report.within_budget
    assert comps[1].graphs[MIXED].latency_ms_batch1["fp32@openvino"] == 0.9
