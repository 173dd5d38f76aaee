"""Triton Python-backend glue for every Python model of an ``mmedge triton`` repository.

Copied as ``<model>/1/model.py``; the model's ``parameters`` (``step`` and its settings) say
which ``mmedge.serve.steps`` step it runs. Needs ``mmedge`` installed where Triton runs Python
models. Each request is answered on its own, so a bad request gets its own error.
"""
import json
from pathlib import Path

pb_utils = None  # triton_python_backend_utils, importable only inside Triton's Python stub


class TritonPythonModel:
    """Runs one mmedge step per request."""

    def initialize(self, args):
        global pb_utils
        import triton_python_backend_utils as utils

        from mmedge.serve.steps import create_step

        pb_utils = utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [i["name"] for i in config["input"]]
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.step = create_step(params, folder)

    def _answer(self, request):
        data = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                data[name] = tensor.as_numpy()
        outputs = self.step(data)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except Exception as exc:  # the request's own error; the model keeps serving
                responses.append(pb_utils.InferenceResponse(error=_error(exc)))
        return responses

    def finalize(self):
        self.step = None


def _error(exc):
    """A bad input (mmedge's InputError is a ValueError) is INVALID_ARG (HTTP 400); anything else INTERNAL."""
    message = f"{type(exc).__name__}: {exc}"
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if isinstance(exc, ValueError) else None
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
