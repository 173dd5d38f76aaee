"""The bench primitives: statistics and interleaving (``mmedge.runtime.timing``), device probes
(``mmedge.runtime.probes``), roofline arithmetic and the report schema (``mmedge.bench``).

No test asserts a timing: only counts, orders, shapes of results, and arithmetic.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mmedge.bench import roofline as bench_roofline
from mmedge.bench import schema
from mmedge.runtime import probes
from mmedge.runtime.timing import LatencyStats, run_interleaved, stage_stats


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_latency_stats_match_numpy(n):
    x = np.random.default_rng(n).gamma(2.0, 3.0, size=n)
    s = LatencyStats.from_samples(list(x), batch=8)
    p50, p90, p99 = np.percentile(x, [50, 90, 99], method="linear")
    assert (s.p50, s.p90, s.p99) == pytest.approx((p50, p90, p99), rel=1e-12)
    assert (s.mean, s.min, s.max, s.std) == pytest.approx((x.mean(), x.min(), x.max(), x.std()), rel=1e-12)
    assert s.n == n and s.batch == 8
    assert s.throughput_per_s == pytest.approx(8 * 1000.0 / p50)
    assert set(s.to_dict()) == {"n", "batch", "p50", "p90", "p99", "mean", "min", "max", "std", "throughput_per_s"}


def test_latency_stats_known_values():
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s.p50 == 3.0 and s.min == 1.0 and s.max == 10.0 and s.mean == 4.0
    assert s.p90 == pytest.approx(4.0 + 0.6 * 6.0)  # linear interpolation between 4 and 10


@pytest.mark.parametrize("bad, batch", [([], 1), ([1.0, -2.0], 1), ([1.0, math.nan], 1), ([1.0], 0)])
def test_latency_stats_rejects_bad_input(bad, batch):
    with pytest.raises(ValueError):
        LatencyStats.from_samples(bad, batch=batch)


def _recorders(names):
    log: list[str] = []
    counts = {n: 0 for n in names}

    def make(name):
        def call():
            log.append(name)
            counts[name] += 1
            return counts[name]
        return call

    return {n: make(n) for n in names}, log, counts


def test_interleaving_visits_every_config_each_iteration_and_excludes_warmup():
    names = ["a", "b", "c"]
    fns, log, counts = _recorders(names)
    seen = []
    samples = run_interleaved(fns, iters=6, warmup=2, rng_seed=3, on_result=lambda n, r: seen.append((n, r)))
    assert counts == {n: 8 for n in names}  # 2 warm-up + 6 timed calls each
    assert {n: len(v) for n, v in samples.items()} == {n: 6 for n in names}
    assert all(v >= 0 for s in samples.values() for v in s)
    rounds = [log[i:i + 3] for i in range(0, len(log), 3)]
    assert all(sorted(r) == names for r in rounds)  # each iteration runs every configuration once
    assert len(seen) == 18 and all(r > 2 for _, r in seen)  # results of warm-up calls are never reported
    assert sorted(r for n, r in seen if n == "a") == list(range(3, 9))


def test_interleaving_order_is_random_and_reproducible():
    orders = []
    for _ in range(2):
        fns, log, _ = _recorders(["a", "b", "c", "d"])
        run_interleaved(fns, iters=20, warmup=0, rng_seed=7)
        orders.append(log)
    assert orders[0] == orders[1]
    rounds = {tuple(orders[0][i:i + 4]) for i in range(0, 80, 4)}
    assert len(rounds) > 1


@pytest.mark.parametrize("iters, warmup", [(0, 1), (1, -1)])
def test_interleaving_rejects_bad_counts(iters, warmup):
    with pytest.raises(ValueError):
        run_interleaved({"a": lambda: None}, iters=iters, warmup=warmup)


def test_stage_stats_from_prediction_timings():
    timings = [{"encoder.image": 2.0, "total": 5.0}, {"encoder.image": 4.0, "encoder.text": 1.0, "total": 7.0}]
    stats = stage_stats(timings, batch=2)
    assert stats["encoder.image"].p50 == 3.0 and stats["encoder.image"].n == 2
    assert stats["encoder.text"].n == 1  # a stage missing in some calls (text cache hit)
    assert stats["total"].batch == 2


def test_memory_readings():
    current = probes.rss_bytes()
    assert current > 0 and probes.peak_rss_bytes() >= current


def test_tegrastats_parser():
    jp5 = ("RAM 2448/7620MB (lfb 1x4MB) CPU [4%@1420,2%@1420] EMC_FREQ 0% GR3D_FREQ 37% "
           "cpu@47.5C VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 1234mW/1200mW VDD_SOC 1500mW/1490mW")
    parsed = probes.parse_tegrastats(jp5)
    assert parsed["gpu_load_pct"] == 37.0 and parsed["ram_used_mb"] == 2448.0
    assert parsed["power_mw"] == {"VDD_IN": 5123.0, "VDD_CPU_GPU_CV": 1234.0, "VDD_SOC": 1500.0}
    old = "RAM 1500/3964MB CPU [10%@102] GR3D_FREQ 0%@76 POM_5V_IN 3064/3064 POM_5V_GPU 0/0"
    parsed = probes.parse_tegrastats(old)
    assert parsed["gpu_load_pct"] == 0.0 and parsed["power_mw"] == {"POM_5V_IN": 3064.0, "POM_5V_GPU": 0.0}
    assert probes.parse_tegrastats("nothing here") == {}


def test_tegrastats_absent_says_not_available(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no tegrastats, as on any non-Jetson
    with probes.TegrastatsSampler() as sampler:
        pass
    summary = sampler.summary()
    assert summary["available"] is False and "not available" in summary["note"]


def test_roofline_counts_every_head_when_they_run_as_one_graph():
    flops = {"encoder.image": {"flops": 6e9}, "head.a": {"flops": 1e9}, "head.b": {"flops": 1e9}}
    peak = {"fp32": {"gops": 100.0}, "int8": {"gops": 200.0}, "numpy_fp32": {"gops": 50.0}}
    stages = {"encoder.image": {"p50": 60.0}, "preprocess.image": {"p50": 5.0}}
    for extra, work, compute_ms in (({"heads": {"p50": 20.0}}, 8e9, 80.0), ({"head.a": {"p50": 10.0}}, 7e9, 70.0)):
        record = {"backend": "ort", "precision": "fp32", "batch": 1, "latency_ms": {"p50": 100.0},
                  "stages_ms": {**stages, **extra}}
        r = bench_roofline.roofline_of(record, flops, peak)
        assert record["flops_per_sample"] == work
        assert r["compute"]["achieved_gops"] == pytest.approx(work / (compute_ms / 1000) / 1e9)


def test_roofline_arithmetic():
    r = bench_roofline.roofline(2e9, 4, 100.0, 200.0)  # 8 GFLOP in 0.1 s = 80 GFLOP/s of 200
    assert r["achieved_gops"] == pytest.approx(80.0)
    assert r["pct_of_peak"] == pytest.approx(40.0)
    assert r["floor_ms"] == pytest.approx(40.0)


def test_numpy_peak_reports_a_measurement():
    peak = probes.numpy_matmul_peak(sizes=(64,), repeats=1)
    assert peak["size"] == 64 and math.isfinite(peak["gops"]) and "numpy" in peak["method"]


def test_runtime_import_does_not_pull_in_torch():
    result = probes.measure_import_ms("import mmedge.runtime.timing, mmedge.runtime.probes, mmedge.runtime.session", repeats=1)
    assert result["torch_imported"] is False and len(result["samples_ms"]) == 1


def test_comparisons_pair_configs_of_one_batch():
    def rec(id_, kind, precision, p50, members=("a", "b")):
        stats = {"total": {"p50": p50}, "encoder.image": {"p50": p50 / 2}}
        return {"id": id_, "kind": kind, "precision": precision, "backend": "torch" if kind == "torch" else "ort",
                "batch": 1, "members": list(members), "latency_ms": {"p50": p50}, "stages_ms": stats}

    records = [rec("fp32/ort/b1", "ensemble", "fp32", 10.0), rec("int8/ort/b1", "ensemble", "int8", 5.0),
               rec("fp32/ort/member=a/b1", "member", "fp32", 8.0, ("a",)), rec("torch/eager/b1", "torch", "fp32", 40.0)]
    ratios = {c["name"]: c["ratio_p50"] for c in schema.comparisons(records)}
    assert ratios == {"runtime fp32/ort / PyTorch eager": 0.25, "runtime int8/ort / PyTorch eager": 0.125,
                      "int8/ort / fp32/ort": 0.5, "ensemble fp32/ort / most accurate member on validation (a)": 1.25}
    first = schema.comparisons(records)[0]
    assert first["stage_ratios_p50"] == {"encoder.image": 0.25, "total": 0.25}
    own = [rec("torch/eager (own process)/b1", "torch", "fp32", 50.0),
           rec("torch/compile (own process)/b1", "torch", "fp32", 20.0)]
    ratios = {c["name"]: c["ratio_p50"] for c in schema.comparisons(records[:1] + own)}
    assert ratios == {"runtime fp32/ort / PyTorch eager (own process)": 0.2,
                      "runtime fp32/ort / PyTorch compile (own process)": 0.5}


# -- the JSON schema -----------------------------------------------------------------------------


def _stats(p50=2.0):
    return LatencyStats.from_samples([p50 - 1, p50, p50 + 1]).to_dict()


def minimal_report():
    """A hand-written report with every required section of ``mmedge.bench/1``."""
    config = {"id": "fp32/ort/b1", "kind": "ensemble", "precision": "fp32", "backend": "ort", "batch": 1,
              "members": ["concat"], "threads": 2, "load_ms": 12.5, "rss_delta_bytes": 1 << 20,
              "latency_ms": _stats(), "stages_ms": {"total": _stats()}, "samples_ms": [1.0, 2.0, 3.0],
              "roofline": None}
    return {"schema": "mmedge.bench/1", "created_utc": "2025-01-01T00:00:00+00:00", "command": ["mmedge", "bench"],
            "settings": {}, "environment": {"cpu_model": "x", "versions": {}, "env": {}, "threads": {"ort_intra_op": 2}},
            "bundle": {"path": "b", "sha256": "0" * 64, "size_bytes": 10}, "data": {}, "import": [], "peak": {},
            "flops": {}, "configs": [config], "accuracy": {}, "comparisons": [
                {"name": "x", "batch": 1, "ratio_p50": 0.5, "numerator": "a", "denominator": "b"}],
            "memory": {}, "device": {}}


def test_validator_accepts_a_valid_report():
    assert schema.validate_report(minimal_report()) == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda r: r.pop("configs"), "report.configs is missing"),
    (lambda r: r.update(schema="mmedge.bench/0"), "report.schema"),
    (lambda r: r["configs"][0].pop("latency_ms"), "configs[0].latency_ms is missing"),
    (lambda r: r["configs"][0]["latency_ms"].update(p50=100.0), "min <= p50"),
    (lambda r: r["configs"][0].update(samples_ms=[1.0]), "samples_ms has 1 values"),
    (lambda r: r["configs"][0].update(batch="1"), "configs[0].batch must be"),
    (lambda r: r["environment"].pop("env"), "environment.env is missing"),
    (lambda r: r["comparisons"][0].pop("ratio_p50"), "comparisons[0].ratio_p50 is missing"),
    (lambda r: r["configs"][0]["stages_ms"].update(total={"p50": 1}), "stages_ms.total.n is missing"),
])
def test_validator_names_what_is_wrong(breakage, expected):
    report = minimal_report()
    breakage(report)
    errors = schema.validate_report(report)
    assert errors and any(expected in e for e in errors), errors


def test_write_json_round_trips_and_nulls_non_finite(tmp_path):
    report = minimal_report()
    report["peak"] = {"fp32": {"gops": math.inf}, "n": np.float32(1.5)}
    path = schema.write_json(report, tmp_path / "sub" / "r.json")
    back = json.loads(path.read_text())
    assert back["peak"] == {"fp32": {"gops": None}, "n": 1.5}
    assert schema.validate_report(back) == []
