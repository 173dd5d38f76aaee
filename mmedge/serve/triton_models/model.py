"""Triton Python-backend glue for every Python model of an ``mmedge triton`` repository.

Copied as ``<model>/1/model.py``; the model's ``parameters`` (``step`` and its settings) say
which ``mmedge.serve.steps`` step it runs. Needs ``mmedge`` installed where Triton runs Python
models. A step may run other models of the server (``_infer``: business-logic scripting; the
similarity step encodes its queries with the text ensemble). Each request is answered on its own (``steps.answer_all``): a bad request gets its own
error (an ``InputError`` as INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT) and never fails the
other requests of its batch.
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
        self.step = create_step(params, folder, infer=_infer)

    def _data(self, request):
        data = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                data[name] = tensor.as_numpy()
        return data

    def execute(self, requests):
        from mmedge.serve.steps import answer_all

        try:  # each request gets its own answer: outputs, or the error it alone caused
            answers = answer_all(self.step, [self._data(r) for r in requests])
        except Exception as exc:  # a failure of the step itself: every request learns it, the model keeps serving
            answers = [exc] * len(requests)
        return [_response(a) for a in answers]

    def finalize(self):
        close, self.step = getattr(self.step, "close", None), None
        if close is not None:
            close()


def _infer(model, inputs, outputs):
    """Runs another model of this server (business-logic scripting): output name -> numpy array."""
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=list(outputs),
                                        inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()])
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"model {model!r} failed: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


def _response(answer):
    if isinstance(answer, Exception):
        return pb_utils.InferenceResponse(error=_error(answer))
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in answer.items()])


def _error(exc):
    """A bad input (mmedge's InputError is a ValueError) is INVALID_ARG (HTTP 400); anything else INTERNAL."""
    message = f"{type(exc).__name__}: {exc}"
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if isinstance(exc, ValueError) else None
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
