"""Python-backend model files that ``mmedge triton`` copies into a repository as ``<model>/1/model.py``."""
