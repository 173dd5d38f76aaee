"""The inference callable a Triton model instance runs: requests in, one ``Session.predict`` per batch, responses out.

No pytriton import here: the callable takes anything with a ``.data`` mapping (PyTriton's
``Request``) or plain mappings, so it is tested without a server.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.serve.protocol import RequestRows, WireLimits, decode_request, encode_outputs

__all__ = ["BundleHandler"]


def _data(request: Any) -> Mapping[str, np.ndarray]:
    return request.data if hasattr(request, "data") else request


class BundleHandler:
    """Runs a dynamic batch of Triton requests through one ``mmedge.runtime.Session``.

    Requests that give the same modalities are merged into one ``Session.predict`` call
    (so the encoders see the whole batch); each request gets its own rows back.

    Args:
        session: The ``Session`` this model instance uses (shared sessions are fine: thread-safe).
        limits: Payload limits checked per request before anything runs.
    """

    def __init__(self, session: Any, *, limits: WireLimits = WireLimits()) -> None:
        self.session = session
        self.limits = limits
        self._members = tuple(m.name for m in session.bundle.members)

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Answers a batch of requests, in order.

        Raises:
            InputError: a request is malformed (the whole batch fails: Triton's Python backend
                reports errors per batch; the mmedge client checks what it can before sending).
        """
        decoded = [decode_request(_data(r), self.limits) for r in requests]
        responses: list[dict[str, np.ndarray] | None] = [None] * len(decoded)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, rows in enumerate(decoded):
            groups.setdefault(rows.modalities, []).append(i)
        for indices in groups.values():
            self._run_group([decoded[i] for i in indices], indices, responses)
        return responses  # type: ignore[return-value]

    def _run_group(self, group: list[RequestRows], indices: list[int],
                   responses: list[dict[str, np.ndarray] | None]) -> None:
        merged: dict[str, list] = {m: [] for m in group[0].modalities}
        for rows in group:
            for m in rows.modalities:
                merged[m].extend(rows.items[m])
        pred = self.session.predict(**merged)  # each modality's wire samples are predict() items (audio: (wave, rate))
        start = 0
        for i, rows in zip(indices, group):
            responses[i] = encode_outputs(pred, self._members, slice(start, start + rows.size))
            start += rows.size
