"""mmedge.export: torch -> ONNX, parity checks, NNCF INT8 and FP16 quantization, calibration."""
