"""mmedge: multimodal fusion models from PyTorch to the edge.

Importing ``mmedge`` is cheap and torch-free; torch is imported by the training and
export modules only.
"""
__version__ = "0.1.0"
CHECKPOINT_FORMAT = "mmedge.checkpoint/1"
BUNDLE_FORMAT = "mmedge.bundle/1"
