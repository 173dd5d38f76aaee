"""Precision records (``mmedge.runtime.precisions``): the built-in ones, lookups, registration checks."""
from __future__ import annotations

import pytest

from mmedge.errors import ConfigError, RegistryError
from mmedge.runtime.precisions import (PRECISIONS, MeasuredOn, Precision, PrecisionKind, TensorRTBuild,
                                       get_precision, precision_names, register_precision, tensorrt_precisions)


def test_built_in_records():
    assert precision_names() == ("fp32", "fp16", "int8", "int8-dynamic", "int8-trt", "int8-fp16-trt", "mixed")
    assert precision_names(kind=PrecisionKind.SELECTED) == ("mixed",)
    assert tensorrt_precisions() == ("int8-fp16-trt", "fp16", "int8-trt", "fp32")  # best first
    fp16_trt = get_precision("int8-fp16-trt")
    assert fp16_trt.derives_from == "int8-trt" and fp16_trt.build_fallback == ("fp16",)
    assert fp16_trt.ort_disabled_optimizers == ("WeightBiasQuantization", "QDQSelectorActionTransformer")
    assert fp16_trt.measured_on is MeasuredOn.SIMULATED and fp16_trt.accuracy_label.startswith("simulated")
    assert [p for p in precision_names() if PRECISIONS[p].mixed_candidate] == ["fp32", "fp16", "int8", "int8-dynamic"]
    assert get_precision("int8").tensorrt is None and get_precision("fp16").min_cosine == 0.999


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown precision 'int4'; registered precisions: fp32, fp16, int8"):
        get_precision("int4")


def test_registration_checks_names_and_references():
    with pytest.raises(RegistryError, match="already registered"):
        register_precision(Precision("fp16", "again"))
    with pytest.raises(ConfigError, match=r"refers to \[.bf16.\], which are not registered"):
        register_precision(Precision("int4-trt", "x", derives_from="bf16", tensorrt=TensorRTBuild("int4-trt", 5)))
    assert "int4-trt" not in PRECISIONS
    record = register_precision(Precision("int4-trt", "x", tensorrt=TensorRTBuild("int4-trt", 5)))
    try:
        assert tensorrt_precisions()[0] == "int4-trt" and get_precision("int4-trt") is record
    finally:
        PRECISIONS.unregister("int4-trt")
    assert "int4-trt" not in tensorrt_precisions()
