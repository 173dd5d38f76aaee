"""What a served model instance runs on a dynamic batch: every request checked on its own, the valid ones merged.

No Triton import here: requests are anything with a ``.data`` mapping (PyTriton's ``Request``)
or plain mappings, so this is tested without a server. ``BundleHandler.answer`` gives each
request its own answer, outputs or the error that request alone caused: one client's bad
request never fails another's (``mmedge.serve.triton_models.model`` turns an ``InputError``
into Triton's ``INVALID_ARG``: HTTP 400 / gRPC INVALID_ARGUMENT).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.modalities import InputOptions, get_modality
from mmedge.serve.protocol import RequestRows, WireLimits, decode_request, encode_outputs, encode_similarity

__all__ = ["BundleHandler"]


def _data(request: Any) -> Mapping[str, np.ndarray]:
    return request.data if hasattr(request, "data") else request


class BundleHandler:
    """Runs a dynamic batch of Triton requests through one ``mmedge.runtime.Session``.

    Each request is validated on its own first (the wire limits, then the runtime's own checks
    of every argument: empty text, rates, sizes); the valid requests that give the same
    modalities are merged into one ``Session.predict`` call (so the encoders see the whole
    batch). Should a merged call still fail, its requests are run again one by one, so an error
    only ever reaches the request that caused it. A request with ``queries`` (a bundle with a
    similarity record) is scored against them (``Session.similarity``), merged with the requests
    that send the same modality and queries.

    Args:
        session: The ``Session`` this model instance uses (shared sessions are fine: thread-safe).
        limits: Payload limits checked per request before anything runs.
        owns_session: ``close()`` closes ``session`` too.
    """

    def __init__(self, session: Any, *, limits: WireLimits = WireLimits(), owns_session: bool = False) -> None:
        self.session = session
        self.limits = limits
        self._owns = owns_session
        self._members = tuple(m.name for m in session.bundle.members)

    def answer(self, requests: Sequence[Any]) -> list[Any]:
        """Each request's outputs (a dict of arrays) or the exception it alone caused, in order."""
        answers: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, RequestRows]]] = {}
        for i, request in enumerate(requests):
            try:
                rows = self.validate(_data(request))
            except InputError as exc:
                answers[i] = exc
                continue
            groups.setdefault((rows.modalities, rows.queries), []).append((i, rows))
        for group in groups.values():
            self._run_group(group, answers)
        return answers

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """``answer``, raising the first request's error if any request was refused.

        Raises:
            InputError: a request is malformed (use ``answer`` to get each request's own error).
        """
        answers = self.answer(requests)
        for item in answers:
            if isinstance(item, Exception):
                raise item
        return answers

    def validate(self, data: Mapping[str, np.ndarray]) -> RequestRows:
        """One request's rows, checked by the wire limits and the runtime's own argument checks.

        Raises:
            InputError: what is wrong with this request, in the runtime's words.
        """
        rows = decode_request(data, self.limits)
        limits = self.session.limits
        for modality in rows.modalities:
            get_modality(modality).split(rows.items[modality], InputOptions(), limits)
        if rows.queries:
            self._check_similarity(rows.modalities)
        return rows

    def _check_similarity(self, given: tuple[str, ...]) -> None:
        info = self.session.bundle.manifest.similarity
        if info is None:
            raise InputError("this bundle's model has no similarity (not a pretrained dual encoder): send `text`, "
                             "not `queries`")
        scored = [m for m in info.modalities if m != "text"]
        if len(given) != 1 or given[0] not in scored:
            raise InputError(f"a request with `queries` sends exactly one of {scored} (the inputs scored), got "
                             f"{list(given)}")

    def _run_group(self, group: list[tuple[int, RequestRows]], answers: list[Any]) -> None:
        try:
            self._predict(group, answers)
        except Exception as exc:  # noqa: BLE001 - isolated below: one by one, each gets its own error
            if len(group) == 1:
                answers[group[0][0]] = exc
                return
            for item in group:
                self._run_group([item], answers)

    def _predict(self, group: list[tuple[int, RequestRows]], answers: list[Any]) -> None:
        modalities, queries = group[0][1].modalities, group[0][1].queries
        merged: dict[str, list] = {m: [s for _, rows in group for s in rows.items[m]] for m in modalities}
        encode = self._similarity(merged, queries) if queries else self._prediction(merged)
        start = 0
        for i, rows in group:
            answers[i] = encode(slice(start, start + rows.size))
            start += rows.size

    def _prediction(self, merged: dict[str, list]) -> Callable[[slice], dict[str, np.ndarray]]:
        pred = self.session.predict(**merged)  # each modality's wire samples are predict() items (audio: (wave, rate))
        return lambda rows: encode_outputs(pred, self._members, rows)

    def _similarity(self, merged: dict[str, list], queries: tuple[str, ...]
                    ) -> Callable[[slice], dict[str, np.ndarray]]:
        """One modality against the same texts (the session's text cache keeps them)."""
        from mmedge.runtime.similarity import activate

        scores = self.session.similarity(text=list(queries), **merged)  # (N, Q)
        outputs = encode_similarity(scores, activate(scores, self.session.bundle.manifest.similarity.activation),
                                    queries)
        return lambda rows: {k: v[rows] for k, v in outputs.items()}

    def close(self) -> None:
        """Closes the session if this handler owns it."""
        if self._owns:
            self.session.close()
