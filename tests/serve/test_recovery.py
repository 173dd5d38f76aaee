"""A model instance process SIGKILLed under load: readiness turns false, then Triton is restarted (readiness
true, requests answered again) or, with no restarts left, ``mmedge serve`` exits non-zero. Never a hang with
readiness true."""
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("pytriton", reason="the serve tests run in their own environment: .ci/serve_tests.sh")

from conftest import free_ports  # noqa: E402  (tests/serve/conftest.py)
from test_cli import _Served  # noqa: E402

from mmedge.client import Client  # noqa: E402
from mmedge.serve.supervise import SERVER_NAME, STUB_NAME, RestartBudget, child_pids  # noqa: E402


def _ready(http):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stubs(pid):
    servers = child_pids(pid, SERVER_NAME)
    assert len(servers) == 1
    return child_pids(next(iter(servers)), STUB_NAME)


class _Load:
    """One client thread sending requests until stopped; counts answers and errors."""

    def __init__(self, grpc, samples):
        self.ok, self.errors, self.stop = 0, [], threading.Event()
        self.thread = threading.Thread(target=self._run, args=(grpc, samples), daemon=True)
        self.thread.start()

    def _run(self, grpc, samples):
        with Client(f"grpc://127.0.0.1:{grpc}", timeout_s=30) as client:
            while not self.stop.is_set():
                try:
                    client.predict(image=samples["images"][0], text=samples["texts"][0])
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001 - counted
                    self.errors.append(str(exc))
                    time.sleep(0.05)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=60)


def _first(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.05)
    return None


def test_a_killed_instance_is_replaced_under_load(bundle_path, samples):
    ports = free_ports(3)
    served = _Served(bundle_path, ports, extra=("--instances", "2"))
    try:
        served.wait_for("ready;")
        stubs = _stubs(served.proc.pid)
        assert len(stubs) == 2
        load = _Load(ports[1], samples)
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(min(stubs), signal.SIGKILL)
        not_ready = _first(lambda: not _ready(ports[0]), 15)
        assert not_ready is not None and not_ready - killed_at < 5  # noticed within a poll, not left ready
        ready_again = _first(lambda: _ready(ports[0]), 120)
        assert ready_again is not None and served.proc.poll() is None
        ok_before = load.ok
        answered = _first(lambda: load.ok > ok_before, 60)  # the client's gRPC channel reconnects with back-off
        load.close()
        assert answered is not None, load.errors[-3:]
        now = _stubs(served.proc.pid)
        assert len(now) == 2 and not now & stubs  # fresh instance processes; none of the old ones left
        assert "model 'mmedge' ready again" in served.wait_for("ready again", timeout_s=10)
    finally:
        served.kill()


def test_with_no_restarts_left_the_server_exits_non_zero(bundle_path, samples):
    ports = free_ports(3)
    served = _Served(bundle_path, ports, extra=("--max-restarts", "0"))
    try:
        served.wait_for("ready;")
        load = _Load(ports[1], samples)
        os.kill(min(_stubs(served.proc.pid)), signal.SIGKILL)
        assert served.proc.wait(timeout=60) != 0
        load.close()
        assert not _ready(ports[0])
    finally:
        served.kill()


def test_the_restart_budget_counts_within_its_window():
    budget = RestartBudget(restarts=2, window_s=0.2)
    assert budget.spend() and budget.spend() and not budget.spend()
    time.sleep(0.25)
    assert budget.spend()
    assert not RestartBudget(restarts=0).spend()


def test_the_watch_sees_a_killed_child_process():
    import subprocess
    import sys

    from mmedge.serve.supervise import InstanceWatch

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        name = os.path.basename(sys.executable)
        assert _first(lambda: child.pid in child_pids(os.getpid(), name), 10)  # a sandbox may show it late
        watch = InstanceWatch(os.getpid(), pids={child.pid})
        assert watch.dead() == set()
        child.kill()
        assert _first(lambda: watch.dead() == {child.pid}, 10)  # a zombie counts as dead, before it is reaped
        child.wait()
        assert watch.dead() == {child.pid} and child.pid not in child_pids(os.getpid(), name)
    finally:
        child.kill()
        child.wait()
