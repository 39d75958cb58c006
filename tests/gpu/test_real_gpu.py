"""On a machine with an NVIDIA GPU and its driver (the H200 these were written for: driver under
/usr/local/nvidia, no Nix): doctor, the driver folder under `ld.so --inhibit-cache`, and GPU
placement, against the real driver. Elsewhere every test skips, saying what it needs.

    python3 -m pytest -q tests/gpu
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import fakedriver
from conftest import one_line_error

SMI = shutil.which("nvidia-smi")
pytestmark = pytest.mark.skipif(SMI is None, reason="needs an NVIDIA GPU: no nvidia-smi on PATH")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "xdg").mkdir()
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def gpu_count() -> int:
    out = subprocess.run([SMI, "-L"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@pytest.fixture
def driver(dynix, env) -> dict:
    proc = dynix("driver", "--json", env=env)
    if proc.returncode != 0:
        pytest.fail(f"dynix driver found no driver on a host with nvidia-smi: {proc.stderr}")
    return json.loads(proc.stdout)


def test_doctor_reports_the_gpu_its_capability_and_the_driver_answering(dynix, tmp_path, env):
    (tmp_path / "none.toml").touch()  # an empty config
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    names = ("gpu", "gpu capability", "driver libraries", "driver folder", "nvml", "cuda driver")
    print(json.dumps([checks[n] for n in names], indent=2))
    for name in names:
        assert checks[name]["status"] == "ok", checks[name]
    query = [
        SMI,
        "--query-gpu=name,memory.total,driver_version,compute_cap",
        "--format=csv,noheader",
    ]
    first = subprocess.run(query, capture_output=True, text=True, check=True).stdout.splitlines()[0]
    gpu, capability = first.split(",")[0].strip(), first.split(",")[-1].strip()
    assert gpu in checks["gpu"]["detail"]
    assert f"GPU 0 {capability}" in checks["gpu capability"]["detail"]
    assert f"{gpu_count()} GPU(s)" in checks["nvml"]["detail"]
    assert f"{gpu_count()} device(s)" in checks["cuda driver"]["detail"]


def test_bare_name_dlopen_needs_the_folder_once_the_host_cache_is_ignored(driver):
    nvml = next(lib for lib in driver["libraries"] if lib["name"] == "libnvidia-ml.so.1")
    with_cache = fakedriver.probe(None, inhibit_cache=False)
    without = fakedriver.probe(None)
    print(json.dumps({"host loader": with_cache, "--inhibit-cache": without}, indent=2))
    if linked := fakedriver.in_system_dirs("libnvidia-ml.so.1"):
        pytest.skip(f"this host links the driver into a folder its own loader searches without "
                    f"its cache ({linked}): a Nix-built loader does not search it, but here "
                    "nothing can show the difference")  # fmt: skip
    assert without["nvml"]["loaded"] is False and without["cuda"]["loaded"] is False
    through = fakedriver.probe(driver["env"]["LD_LIBRARY_PATH"])
    print(json.dumps({"--inhibit-cache, LD_LIBRARY_PATH=driver folder": through}, indent=2))
    assert through["nvml"]["init"] == 0 and through["nvml"]["devices"] == gpu_count()
    assert through["cuda"]["init"] == 0 and through["cuda"]["devices"] == gpu_count()
    assert os.path.realpath(through["nvml"]["file"]) == os.path.realpath(nvml["target"])


def dry_run(dynix, tmp_path, env, graph: str) -> str:
    proc = dynix("serve", "--dry-run", "--graph", graph, "--state-dir", tmp_path / "s", env=env)
    assert proc.returncode == 0, proc.stderr
    graph_part = proc.stdout.split("[graph]\n", 1)[1].split("\n\n", 1)[0]
    print(graph_part)
    return graph_part


def test_serve_dry_run_places_the_workers_on_this_machines_gpus(dynix, tmp_path, env, driver):
    count = gpu_count()
    agg = dry_run(dynix, tmp_path, env, "agg")
    assert f"env: LD_LIBRARY_PATH={driver['env']['LD_LIBRARY_PATH']}" in agg
    assert "gpus: VllmWorker: worker 1 GPU 0" in agg.splitlines()
    disagg = dry_run(dynix, tmp_path, env, "disagg")
    if count == 1:
        assert "gpus: PrefillWorker: worker 1 GPU 1 (not present: 1 here)" in disagg
        assert "gpus: on 1 GPU these graphs fit: agg, agg_router" in disagg
    else:
        assert "gpus: PrefillWorker: worker 1 GPU 1" in disagg.splitlines()


def test_serve_refuses_a_graph_needing_more_gpus_than_present(dynix, tmp_path, env):
    count = gpu_count()
    proc = dynix("serve", "--role", "graph", "--graph", "disagg", "--decode-workers", str(count),
                 "--state-dir", tmp_path / "s", "--control-plane",
                 "http://127.0.0.1:9,nats://127.0.0.1:9", env=env)  # fmt: skip
    error = one_line_error(proc)
    print(error)
    assert f"the graph needs {count + 1} GPUs" in error
    assert f"but {count} {'is' if count == 1 else 'are'} present" in error
