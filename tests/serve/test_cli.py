"""``mmedge triton`` and ``mmedge serve`` from the command line: output, exit codes, clean shutdown."""
import importlib.util
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from mmedge.cli import app

needs_pytriton = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                    reason="the serve tests run in their own environment: .ci/serve_tests.sh")


def test_triton_command_writes_a_repository(bundle_path, tmp_path):
    result = CliRunner().invoke(app, ["triton", str(bundle_path), "-o", str(tmp_path / "repo"), "--max-batch", "4",
                                      "--instances", "2"])
    assert result.exit_code == 0, result.output
    assert "mmedge.encoder.image" in result.output and "ensemble" in result.output
    assert (tmp_path / "repo" / "mmedge" / "config.pbtxt").is_file()
    assert "max_batch_size: 4" in (tmp_path / "repo" / "mmedge.head.concat" / "config.pbtxt").read_text()
    from mmedge.serve.protocol import WireLimits

    flag = f"--http-max-input-size={WireLimits().max_request_bytes(4)}"  # the largest valid request of 4 rows
    assert f"tritonserver --model-repository {tmp_path / 'repo'} {flag}" in " ".join(result.output.split())


@needs_pytriton
def test_pytritons_tritonserver_has_no_request_size_flag():
    """Why ``mmedge serve`` cannot bound a request's size and its banner and docs/serving.md send users to a front
    proxy: PyTriton's tritonserver predates ``--http-max-input-size``. Should a newer one know it, pass
    ``serve_config.http_max_input_size_flag`` to it, and this test says so."""
    import os
    from pathlib import Path

    import pytriton

    from mmedge.serve.server import prepare_environment

    prepare_environment()
    binary = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    usage = result.stdout + result.stderr
    assert "--http-port" in usage  # the usage text was read
    assert "--http-max-input-size" not in usage, "this tritonserver has the flag: mmedge serve should pass it"


@pytest.mark.parametrize("args, words", [
    (["--precision", "int8"], "precision 'int8' has status"),
    (["--max-batch", "0"], "max_batch must be an integer >= 1"),
    (["--graph-backend", "tvm"], "graph_backend must be one of"),
    (["--model-name", "a/b"], "may only hold"),
])
def test_triton_command_refuses_bad_flags(bundle_path, tmp_path, args, words):
    result = CliRunner().invoke(app, ["triton", str(bundle_path), "-o", str(tmp_path / "repo"), *args])
    assert result.exit_code == 2 and words in " ".join(result.output.split())


class _Served:
    """``mmedge serve`` in a subprocess; one thread reads its stdout (a pipe read must not block the test)."""

    def __init__(self, bundle_path, ports, extra=()):
        http, grpc, metrics = ports
        cmd = [sys.executable, "-m", "mmedge", "serve", str(bundle_path), "--http-port", str(http), "--grpc-port",
               str(grpc), "--metrics-port", str(metrics), "--threads", "1", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def wait_for(self, words, timeout_s=90.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.lines.get(timeout=1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if words in self.seen[-1]:
                return "".join(self.seen)
        raise AssertionError(f"no {words!r} within {timeout_s} s; got {''.join(self.seen)[-2000:]!r}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _workspaces(pid):
    from mmedge.serve.server import workspace_root

    return list(workspace_root().glob(f"ws-{pid}-*"))


@needs_pytriton
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_cleanly_on_signals(bundle_path, samples, sig):
    from conftest import free_ports

    from mmedge.client import Client

    ports = free_ports(3)
    served = _Served(bundle_path, ports)
    proc = served.proc
    try:
        banner = served.wait_for("ready;")
        assert f"http://127.0.0.1:{ports[0]}" in banner and f":{ports[2]}/metrics" in banner
        assert len(_workspaces(proc.pid)) == 1
        with Client(f"grpc://127.0.0.1:{ports[1]}") as client:
            assert client.predict(image=samples["images"][0], text=samples["texts"][0]).labels
        proc.send_signal(sig)
        assert "server stopped; workspace removed" in served.wait_for("server stopped", timeout_s=30)
        assert proc.wait(timeout=30) == 0
        assert _workspaces(proc.pid) == []
    finally:
        served.kill()


@needs_pytriton
def test_a_killed_servers_workspace_is_swept(bundle_path):
    from conftest import free_ports

    from mmedge.serve.server import sweep_workspaces

    served = _Served(bundle_path, free_ports(3))
    try:
        served.wait_for("ready;")
    finally:
        served.kill()  # SIGKILL: no clean-up runs; Triton dies with its parent (PR_SET_PDEATHSIG)
    left = _workspaces(served.proc.pid)
    assert len(left) == 1
    assert sweep_workspaces() == left and not left[0].exists()


def test_serve_command_without_pytriton_says_how_to_install(bundle_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pytriton(name, *args, **kwargs):
        if name.startswith("pytriton"):
            raise ImportError("No module named 'pytriton'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pytriton)
    result = CliRunner().invoke(app, ["serve", str(bundle_path)])
    assert result.exit_code == 2 and "pip install 'mmedge[serve]'" in " ".join(result.output.split())
