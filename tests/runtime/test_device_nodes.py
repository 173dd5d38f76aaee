"""``device_nodes``: auto does not import openvino to look for an Intel GPU or NPU on a Linux machine
that has no node the device's driver creates (OpenVINO could not see one either)."""
from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import pytest

from mmedge.runtime.backends.device_nodes import DEVICE_NODES, missing_device_node

linux = pytest.mark.skipif(platform.system() != "Linux", reason="device nodes are read on Linux only")


@linux
def test_a_device_without_its_node_is_missing_and_one_with_it_is_asked(tmp_path):
    (tmp_path / "dri").mkdir()
    nodes = {"GPU": (str(tmp_path / "dri/renderD*"),), "NPU": (str(tmp_path / "accel/accel*"),)}
    assert "no GPU here" in missing_device_node("GPU", nodes) and str(tmp_path) in missing_device_node("GPU", nodes)
    (tmp_path / "dri/renderD128").touch()
    assert missing_device_node("GPU", nodes) is None  # a node of any vendor: OpenVINO is asked
    assert missing_device_node("NPU", nodes) is not None
    assert missing_device_node("CPU", nodes) is None  # no node to look for: asked as before


@linux
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_auto_does_not_import_openvino_to_look_for_a_gpu_that_has_no_node():
    """Where this machine has no GPU / NPU node (these CI machines), the GPU and NPU rows say so without the import."""
    absent = [d for d, patterns in DEVICE_NODES.items() if missing_device_node(d) is not None]
    if absent != ["GPU", "NPU"]:
        pytest.skip(f"this machine has a device node for {sorted(set(DEVICE_NODES) - set(absent))}")
    code = ("import sys; from mmedge.runtime.backends.openvino import OpenVINOGpuLoader, OpenVINONpuLoader; "
            "print(OpenVINOGpuLoader.availability()); print(OpenVINONpuLoader.availability()); "
            "print('openvino' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("no GPU here") and out[1].startswith("no NPU here") and out[2] == "False"
