"""Settings of ``mmedge serve`` (frozen, checked at construction)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mmedge.errors import ConfigError
from mmedge.serve.protocol import WireLimits

__all__ = ["ServeConfig", "DEFAULT_MODEL_NAME", "DEFAULT_MAX_QUEUE", "dynamic_batching", "http_max_input_size_flag",
           "HTTP_MAX_INPUT_SIZE_SINCE"]

DEFAULT_MODEL_NAME = "mmedge"
DEFAULT_MAX_QUEUE = 64  # requests waiting per model; more are refused at once (UNAVAILABLE / HTTP 503)
HTTP_MAX_INPUT_SIZE_SINCE = "Triton 2.59 (NGC 25.06)"  # the first tritonserver with --http-max-input-size
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_model_name(name: str) -> str:
    """``name`` if Triton accepts it as a model name, else a ``ConfigError``."""
    if not name or set(name) - _NAME_CHARS:
        raise ConfigError(f"model name {name!r} may only hold letters, digits, '.', '_' and '-'")
    return name


def check_counts(obj: object, minimums: tuple[tuple[str, int], ...]) -> None:
    """``ConfigError`` unless each named attribute of ``obj`` is an int at least its minimum."""
    for name, low in minimums:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def dynamic_batching(config: object) -> dict:
    """The ``dynamic_batching`` message of a model config from ``config``'s ``queue_delay_us``, ``max_queue`` and
    ``queue_timeout_us``: a bounded queue whose overflow (and any request waiting past the timeout) is REJECTED
    at once with UNAVAILABLE, instead of waiting until the client times out."""
    from mmedge.serve.pbtxt import Enum

    policy = {"timeout_action": Enum("REJECT"), "default_timeout_microseconds": getattr(config, "queue_timeout_us"),
              "allow_timeout_override": False, "max_queue_size": getattr(config, "max_queue")}
    return {"max_queue_delay_microseconds": getattr(config, "queue_delay_us"), "default_queue_policy": policy}


def http_max_input_size_flag(max_batch: int, limits: WireLimits = WireLimits()) -> str:
    """tritonserver's ``--http-max-input-size`` set to the largest valid request of ``max_batch`` rows
    (``WireLimits.max_request_bytes``): Triton refuses an HTTP request whose inputs add up to more with 400
    before it copies them into a request (it has read the body by then). Only tritonserver since
    ``HTTP_MAX_INPUT_SIZE_SINCE`` knows the flag; its default there, 64 MiB, would also refuse valid requests
    of a large ``max_batch`` (16 images of 2048 x 2048: 192 MiB)."""
    return f"--http-max-input-size={limits.max_request_bytes(max_batch)}"


def _check_port(name: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number 1-65535, got {port!r}")


@dataclass(frozen=True)
class ServeConfig:
    """How ``mmedge serve`` runs a bundle on Triton.

    Attributes:
        host: Address the HTTP, gRPC and metrics endpoints bind to (loopback by default;
            ``0.0.0.0`` serves other machines).
        http_port: HTTP/REST (KServe v2) port; health at ``/v2/health/ready``.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port (``/metrics``).
        model_name: The Triton model name clients call.
        precision: Bundle precision to serve (``bundle.precisions()``).
        backend: mmedge runtime backend (``auto``, ``ort``, ``tensorrt``...).
        max_batch: Triton's ``max_batch_size``: the most rows one execution gets.
        batching: Dynamic batching (requests queued up to ``queue_delay_us`` and merged).
        queue_delay_us: Longest wait for more requests to batch, in microseconds.
        max_queue: Requests that may wait in the model's queue (0: unbounded); more are refused at once with
            UNAVAILABLE (HTTP 503). Needs dynamic batching (Triton's queue policy is the batcher's).
        queue_timeout_us: A request waiting longer is refused with UNAVAILABLE (0: no timeout).
        instances: Model instances (each its own Session and Triton instance).
        max_restarts: Restarts of Triton within 10 minutes after an instance process died (killed, out of
            memory); one more death stops the server with an error (exit non-zero). 0: exit on the first.
        threads: CPU threads per graph per instance (None: cores // instances, at least 1).
        limits: Payload limits per request row.
        log_verbose: Triton's verbose log level (0: info only).
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str = DEFAULT_MODEL_NAME
    precision: str = "fp32"
    backend: str = "auto"
    max_batch: int = 16
    batching: bool = True
    queue_delay_us: int = 2000
    max_queue: int = DEFAULT_MAX_QUEUE
    queue_timeout_us: int = 0
    instances: int = 1
    max_restarts: int = 3
    threads: int | None = None
    limits: WireLimits = field(default_factory=WireLimits)
    log_verbose: int = 0

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ConfigError(f"host must be an IP address (127.0.0.1, 0.0.0.0, ::1), got {self.host!r}") from None
        for name in ("http_port", "grpc_port", "metrics_port"):
            _check_port(name, getattr(self, name))
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ConfigError(f"HTTP, gRPC and metrics ports must differ, got {self.http_port}, {self.grpc_port}, "
                              f"{self.metrics_port}")
        check_model_name(self.model_name)
        check_counts(self, (("max_batch", 1), ("instances", 1), ("queue_delay_us", 0), ("max_queue", 0),
                            ("queue_timeout_us", 0), ("max_restarts", 0)))
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {self.threads!r}")

    def instance_threads(self, cores: int) -> int:
        """CPU threads per graph of each instance."""
        return self.threads if self.threads is not None else max(1, cores // self.instances)
