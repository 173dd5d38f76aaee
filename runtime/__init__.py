"""mmedge.runtime: the light, torch-free runtime (numpy + onnxruntime or tensorrt)."""
