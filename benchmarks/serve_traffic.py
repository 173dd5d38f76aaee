"""Traffic for the serving benchmarks (``serve_load.py``, ``serve_soak.py``): good and bad requests, closed and
open loop.

Requests are single image+text rows sent with raw ``tritonclient.grpc`` (one client per
thread); bad ones carry whitespace-only text with the same image shape as the good rows (the
mmedge client would refuse them before sending). The open loop sends at a fixed rate with gRPC
``async_infer``, whatever the server's speed, so overload shows as refusals, not as a slower
client. Every outcome is counted; nothing is hidden.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

BAD_TEXT = " \t "  # the runtime refuses whitespace-only text: "text[0] is empty or whitespace only"


@dataclass
class Outcomes:
    """What a run of requests got: latencies (ms) per outcome, and the first message of each kind of error."""

    good_ms: list[float] = field(default_factory=list)
    good_failed: list[str] = field(default_factory=list)
    bad_refused: list[str] = field(default_factory=list)
    bad_answered: int = 0
    busy_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict:
        """Counts, percentiles and first messages, for JSON."""
        def pct(values: list[float], q: float) -> float:
            return round(float(np.percentile(values, q)), 2) if values else float("nan")

        refused_ok = [m for m in self.bad_refused if "INVALID_ARGUMENT" in m and "empty or whitespace" in m]
        return {"good_ok": len(self.good_ms), "good_failed": len(self.good_failed),
                "good_p50_ms": pct(self.good_ms, 50), "good_p99_ms": pct(self.good_ms, 99),
                "bad_refused": len(self.bad_refused), "bad_refused_with_message": len(refused_ok),
                "bad_answered": self.bad_answered, "busy_refused": len(self.busy_ms),
                "busy_p50_ms": pct(self.busy_ms, 50), "busy_p99_ms": pct(self.busy_ms, 99), "first_good_failure": (self.good_failed or [""])[0][:300],
                "first_bad_message": (self.bad_refused or [""])[0][:300]}


def good_rows(samples: str | None, count: int = 16) -> list[dict]:
    """Single-row image+text inputs: the serve fixture's samples, or random images with fixed captions."""
    if samples is not None:
        data = np.load(samples)
        return [{"image": data["images"][i], "text": str(data["texts"][i])} for i in range(len(data["texts"]))]
    rng = np.random.default_rng(0)
    captions = ["an even digit", "a prime number", "a digit larger than five", "an odd number below five"]
    return [{"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "text": captions[i % len(captions)]}
            for i in range(count)]


def grpc_inputs(row: dict, bad: bool) -> list:
    """The raw gRPC inputs of one row (whitespace-only text when ``bad``)."""
    import tritonclient.grpc as tcg

    image = np.ascontiguousarray(row["image"])[None]
    text = np.array([[(BAD_TEXT if bad else row["text"]).encode()]], dtype=object)
    inputs = [tcg.InferInput("image", list(image.shape), "UINT8"), tcg.InferInput("text", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(image)
    inputs[1].set_data_from_numpy(text)
    return inputs


def _record(out: Outcomes, bad: bool, start: float, error: object) -> None:
    ms = (time.perf_counter() - start) * 1000.0
    with out.lock:
        if error is None:
            if bad:
                out.bad_answered += 1
            else:
                out.good_ms.append(ms)
            return
        text = f"{getattr(error, 'status', lambda: '')()} {getattr(error, 'message', lambda: str(error))()}"
        if "UNAVAILABLE" in text or text.startswith("503"):
            out.busy_ms.append(ms)
        elif bad:
            out.bad_refused.append(text)
        else:
            out.good_failed.append(text)


def closed_loop(url: str, rows: list[dict], good_clients: int, bad_clients: int, requests: int,
                deadline_s: float = 300.0) -> tuple[Outcomes, float]:
    """``good_clients`` + ``bad_clients`` threads, each sending ``requests`` requests back to back.

    Returns:
        The outcomes and the wall time in seconds.
    """
    import tritonclient.grpc as tcg

    out, address, stop_at = Outcomes(), url.split("://", 1)[-1], time.monotonic() + deadline_s

    def client(index: int, bad: bool) -> None:
        with tcg.InferenceServerClient(address) as raw:
            for k in range(requests):
                if time.monotonic() > stop_at:
                    _record(out, bad, time.perf_counter(), RuntimeError("deadline reached before sending"))
                    continue
                start = time.perf_counter()
                try:
                    raw.infer("mmedge", grpc_inputs(rows[(index * requests + k) % len(rows)], bad))
                    _record(out, bad, start, None)
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    _record(out, bad, start, exc)

    threads = [threading.Thread(target=client, args=(i, i >= good_clients)) for i in range(good_clients + bad_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=deadline_s + 60)
    return out, time.perf_counter() - start


def open_loop(url: str, rows: list[dict], rate: float, seconds: float, bad_fraction: float = 0.0,
              seed: int = 0, out: Outcomes | None = None) -> tuple[Outcomes, float]:
    """Sends ``rate`` requests/s for ``seconds`` whatever the answers, a ``bad_fraction`` of them bad.

    Returns:
        The outcomes (after every answer came back, or 120 s) and the rate actually offered.
    """
    import tritonclient.grpc as tcg

    out = out or Outcomes()
    rng = np.random.default_rng(seed)
    pending = threading.Semaphore(0)
    count = int(rate * seconds)
    with tcg.InferenceServerClient(url.split("://", 1)[-1]) as raw:
        begin = time.perf_counter()
        for i in range(count):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            bad, start = bool(rng.random() < bad_fraction), time.perf_counter()

            def done(result: object, error: object, bad: bool = bad, start: float = start) -> None:
                _record(out, bad, start, error)
                pending.release()

            raw.async_infer("mmedge", grpc_inputs(rows[i % len(rows)], bad), callback=done, client_timeout=60)
        offered = count / max(time.perf_counter() - begin, 1e-9)
        for _ in range(count):
            if not pending.acquire(timeout=120):
                break
    return out, offered
