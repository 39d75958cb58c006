"""The host's NVIDIA driver for the Nix-built stack, with a fake driver: real ELF libraries of the
driver's names built with `cc` (tests/fakedriver.py) in a fake host tree, found by the real
`ldconfig`, loaded by the real loader with `ld.so --inhibit-cache` (as Nix's glibc loads: the
host's cache ignored). No GPU is involved; tests/gpu runs the same on a real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fakedriver
from conftest import REPO, one_line_error

pytestmark = pytest.mark.skipif(
    not fakedriver.cc(), reason="needs a C compiler (cc) for the fake driver"
)

DRIVER_NAMES = {
    "libcuda.so",
    "libcuda.so.1",
    "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so.4",
    f"libnvidia-nvvm.so.{fakedriver.VERSION}",
    "libcudadebugger.so.1",
    f"libnvidia-gpucomp.so.{fakedriver.VERSION}",
}
H200 = ("NVIDIA H200", "143771 MiB", fakedriver.VERSION, "9.0")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "xdg").mkdir()
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
    }


def driver_json(dynix, env) -> dict:
    proc = dynix("driver", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_driver_found_through_ldconfig_and_only_its_libraries_linked(dynix, tmp_path, env):
    root = fakedriver.host(tmp_path)
    env["DYNIX_DRIVER_ROOT"] = str(root)
    data = driver_json(dynix, env)
    assert data["version"] == fakedriver.VERSION and data["missing"] == []
    sources = {lib["name"]: lib["source"] for lib in data["libraries"]}
    assert sources["libcuda.so.1"] == "ldconfig -p"
    assert sources["libnvidia-ml.so.1"] == "ldconfig -p"
    assert sources[f"libnvidia-gpucomp.so.{fakedriver.VERSION}"] == "needed by libcuda.so.1"
    folder = Path(data["folder"])
    assert folder.parent == tmp_path / "cache" / "dynix" / "driver"
    assert folder.name.startswith(f"{fakedriver.VERSION}-")
    assert set(os.listdir(folder)) == DRIVER_NAMES  # not libunrelated, nor libc or libm
    for name in DRIVER_NAMES:
        target = os.readlink(folder / name)
        assert target.startswith(str(root / fakedriver.MULTIARCH.lstrip("/")) + "/"), target
        assert Path(target).is_file() and not Path(target).is_symlink()
    assert data["env"]["LD_LIBRARY_PATH"] == str(folder)


def test_bare_name_dlopen_fails_without_the_folder_and_answers_through_it(dynix, tmp_path, env):
    for name in ("libnvidia-ml.so.1", "libcuda.so.1"):
        if linked := fakedriver.in_system_dirs(name):
            pytest.skip(f"a real driver library is in the loader's own folders ({linked})")
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    folder = driver_json(dynix, env)["folder"]
    before = fakedriver.probe(None)
    assert before["nvml"]["loaded"] is False and "libnvidia-ml.so.1" in before["nvml"]["error"]
    assert before["cuda"]["loaded"] is False
    after = fakedriver.probe(folder)
    assert after["nvml"] == {
        "library": "libnvidia-ml.so.1",
        "loaded": True,
        "file": str(Path(os.readlink(Path(folder) / "libnvidia-ml.so.1"))),
        "init": 0,
        "devices": 1,
        "driver": fakedriver.VERSION,
    }
    # libcuda's own cuInit needs libnvidia-gpucomp, found through the folder too
    assert after["cuda"]["init"] == 0 and after["cuda"]["devices"] == 1
    assert after["cuda"]["cuda"] == "12.8"


@pytest.mark.parametrize(
    ("layout", "cache", "winner", "source"),
    [
        # the loader cache names the multiarch folder; a stale copy in /usr/lib64 loses
        ({fakedriver.MULTIARCH: "570.86.15", "/usr/lib64": "550.54.14"}, True,
         fakedriver.MULTIARCH, "ldconfig -p"),
        # no cache: the multiarch folder before /usr/lib64 and the Kubernetes plugin's
        ({"/usr/local/nvidia/lib64": "550.54.14", fakedriver.MULTIARCH: "570.86.15"}, False,
         fakedriver.MULTIARCH, "Debian/Ubuntu multiarch folder"),
        ({"/usr/lib64": "570.86.15"}, False, "/usr/lib64", "/usr/lib64"),
        ({"/usr/local/nvidia/lib64": "570.86.15"}, False, "/usr/local/nvidia/lib64",
         "Kubernetes device plugin"),
        # NixOS's driver link comes before everything
        ({"/run/opengl-driver/lib": "570.86.15", fakedriver.MULTIARCH: "550.54.14"}, True,
         "/run/opengl-driver/lib", "NixOS driver link"),
    ],
)  # fmt: skip
def test_discovery_order(dynix, tmp_path, env, layout, cache, winner, source):
    root = fakedriver.host(tmp_path, layout, cache=cache)
    env["DYNIX_DRIVER_ROOT"] = str(root)
    data = driver_json(dynix, env)
    assert data["version"] == "570.86.15"
    for lib in data["libraries"]:
        assert Path(lib["path"]).parent == root / winner.lstrip("/"), lib
        assert lib["source"] in (source, "needed by libcuda.so.1")
    nixos = str(root / "run/opengl-driver/lib")
    expected = f"{nixos}:{data['folder']}" if winner.startswith("/run") else data["folder"]
    assert data["env"]["LD_LIBRARY_PATH"] == expected


def test_folders_named_in_ld_so_conf_d_are_searched(dynix, tmp_path, env):
    root = fakedriver.host(tmp_path, {"/opt/nvidia/driver": "570.86.15"}, cache=False)
    fakedriver.write_ld_so_conf(root, ["/opt/nvidia/driver"])
    env["DYNIX_DRIVER_ROOT"] = str(root)
    sources = {lib["name"]: lib["source"] for lib in driver_json(dynix, env)["libraries"]}
    assert sources["libcuda.so.1"] == "/etc/ld.so.conf.d/nvidia.conf"


def test_a_file_that_is_not_a_library_is_passed_over(dynix, tmp_path, env):
    root = fakedriver.host(tmp_path, {"/usr/lib64": "570.86.15"}, cache=False)
    multiarch = root / fakedriver.MULTIARCH.lstrip("/")
    multiarch.mkdir(parents=True)
    (multiarch / "libcuda.so.1").write_text("not an ELF file\n")
    env["DYNIX_DRIVER_ROOT"] = str(root)
    cuda = next(
        lib for lib in driver_json(dynix, env)["libraries"] if lib["name"] == "libcuda.so.1"
    )
    assert cuda["source"] == "/usr/lib64"


def test_no_driver_is_one_line_naming_what_is_missing(dynix, tmp_path, env):
    (tmp_path / "host").mkdir()
    env["DYNIX_DRIVER_ROOT"] = str(tmp_path / "host")
    error = one_line_error(dynix("driver", env=env))
    assert error.startswith("Error: no NVIDIA driver here: libcuda.so.1 and libnvidia-ml.so.1")


def test_concurrent_runs_end_with_one_complete_folder(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    with ThreadPoolExecutor(6) as pool:
        procs = list(pool.map(lambda _: dynix("driver", env=env), range(6)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    folders = {p.stdout.strip() for p in procs}
    assert len(folders) == 1
    base = tmp_path / "cache" / "dynix" / "driver"
    assert os.listdir(base) == [Path(folders.pop()).name]  # no temporary folder left behind


def test_a_planted_symlink_or_stale_folder_is_replaced(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    folder = Path(driver_json(dynix, env)["folder"])
    # someone replaces the folder with a symlink to a folder of their own
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "libcuda.so.1").write_text("planted")
    for name in os.listdir(folder):
        os.unlink(folder / name)
    folder.rmdir()
    folder.symlink_to(elsewhere)
    assert driver_json(dynix, env)["folder"] == str(folder)
    assert not folder.is_symlink() and set(os.listdir(folder)) == DRIVER_NAMES
    assert (elsewhere / "libcuda.so.1").read_text() == "planted"  # their files left alone
    # a stale link inside the folder
    os.unlink(folder / "libnvidia-ml.so.1")
    os.symlink("/nonexistent/libnvidia-ml.so.1", folder / "libnvidia-ml.so.1")
    driver_json(dynix, env)
    assert os.readlink(folder / "libnvidia-ml.so.1").endswith(
        f"libnvidia-ml.so.{fakedriver.VERSION}"
    )


def test_a_cache_folder_that_is_a_symlink_is_refused(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    (tmp_path / "cache" / "dynix").mkdir(parents=True)
    (tmp_path / "target").mkdir()
    (tmp_path / "cache" / "dynix" / "driver").symlink_to(tmp_path / "target")
    error = one_line_error(dynix("driver", env=env))
    assert "driver is not a folder (a symlink?)" in error
    assert os.listdir(tmp_path / "target") == []


def doctor_checks(dynix, tmp_path, env) -> dict[str, dict]:
    (tmp_path / "none.toml").touch()  # an empty config
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def test_doctor_on_a_gpu_host_with_the_fake_driver(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200])
    checks = doctor_checks(dynix, tmp_path, env)
    assert checks["gpu"]["status"] == "ok"
    assert checks["gpu"]["detail"].startswith(
        f"1 x NVIDIA H200 (143771 MiB), driver {fakedriver.VERSION}"
    )
    assert checks["gpu capability"] == {
        "name": "gpu capability",
        "status": "ok",
        "detail": "GPU 0 9.0 (the stack is built for 9.0, 10.0)",
        "fix": "",
    }
    libraries = checks["driver libraries"]
    assert libraries["status"] == "ok"
    assert libraries["detail"].startswith(f"{fakedriver.VERSION}: libcuda.so.1, libnvidia-ml.so.1")
    assert (
        "(ldconfig -p)" in libraries["detail"] and "(needed by libcuda.so.1)" in libraries["detail"]
    )
    assert checks["driver folder"]["status"] == "ok"
    assert checks["nvml"]["status"] == "ok", checks["nvml"]
    assert checks["nvml"]["detail"].startswith("nvmlInit ok through ")
    assert checks["cuda driver"]["status"] == "ok", checks["cuda driver"]
    assert "1 device(s), CUDA 12.8" in checks["cuda driver"]["detail"]


def test_doctor_fails_a_gpu_outside_the_built_capabilities_naming_the_override(
    dynix, tmp_path, env
):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200, ("NVIDIA A100-SXM4-80GB", "81920 MiB",
                                                          fakedriver.VERSION, "8.0")])  # fmt: skip
    (tmp_path / "none.toml").touch()  # an empty config
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    assert proc.returncode == 1
    check = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["gpu capability"]
    assert check["status"] == "fail"
    assert check["detail"] == (
        "NVIDIA A100-SXM4-80GB (GPU 1) has compute capability 8.0; "
        "the stack's kernels are built for 9.0, 10.0"
    )
    assert 'cudaCapabilities = [ "8.0" ]' in check["fix"]
    env["DYNIX_CUDA_CAPABILITIES"] = "8.0;9.0"
    assert doctor_checks(dynix, tmp_path, env)["gpu capability"]["status"] == "ok"


def test_doctor_with_nvidia_smi_but_no_driver_libraries_fails(dynix, tmp_path, env):
    (tmp_path / "host").mkdir()
    env["DYNIX_DRIVER_ROOT"] = str(tmp_path / "host")
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200])
    libraries = doctor_checks(dynix, tmp_path, env)["driver libraries"]
    assert libraries["status"] == "fail"
    assert libraries["detail"].startswith("libcuda.so.1 and libnvidia-ml.so.1 not found (searched ")
    assert "libnvidia-compute" in libraries["fix"]


def dry_run(dynix, tmp_path, env, *args: str) -> str:
    proc = dynix("serve", "--dry-run", "--state-dir", tmp_path / "state", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_serve_gives_the_vllm_graph_the_driver_folder_and_shows_placement(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200])
    folder = driver_json(dynix, env)["folder"]
    out = dry_run(dynix, tmp_path, env, "--graph", "agg")
    graph = out.split("[graph]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert f"env: LD_LIBRARY_PATH={folder}" in graph
    assert f"env: TRITON_LIBCUDA_PATH={folder}" in graph
    assert "env: CUDA_DEVICE_ORDER=PCI_BUS_ID" in graph
    assert f"driver: NVIDIA {fakedriver.VERSION} linked in {folder}" in graph
    assert "gpus: VllmWorker: worker 1 GPU 0" in graph
    assert "gpus: on 1 GPU these graphs fit: agg, agg_router" in graph
    # nats and etcd do not get it
    assert "LD_LIBRARY_PATH" not in out.split("[graph]", 1)[0]
    out = dry_run(dynix, tmp_path, env, "--graph", "disagg")
    assert "gpus: PrefillWorker: worker 1 GPU 1 (not present: 1 here)" in out


def test_serve_refuses_more_gpus_than_present_saying_which_graphs_fit(dynix, tmp_path, env):
    env["DYNIX_DRIVER_ROOT"] = str(fakedriver.host(tmp_path))
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200])
    proc = dynix("serve", "--role", "graph", "--graph", "disagg", "--state-dir", tmp_path / "s",
                 "--control-plane", "http://127.0.0.1:9,nats://127.0.0.1:9", env=env)  # fmt: skip
    assert one_line_error(proc) == (
        "Error: the graph needs 2 GPUs (VllmWorker 1x1, PrefillWorker 1x1) but 1 is present "
        "(nvidia-smi -L); on 1 GPU these graphs fit: agg, agg_router; use fewer workers, or "
        "--graph echo to run without GPUs"
    )


def test_serve_refuses_a_vllm_graph_without_driver_libraries(dynix, tmp_path, env):
    (tmp_path / "host").mkdir()
    env["DYNIX_DRIVER_ROOT"] = str(tmp_path / "host")
    fakedriver.write_nvidia_smi(tmp_path / "bin", [H200])
    proc = dynix("serve", "--role", "graph", "--graph", "agg", "--state-dir", tmp_path / "s",
                 "--control-plane", "http://127.0.0.1:9,nats://127.0.0.1:9", env=env)  # fmt: skip
    assert one_line_error(proc).startswith("Error: no NVIDIA driver here: libcuda.so.1 and ")


def test_the_probe_module_needs_only_the_standard_library():
    # it runs under `ld.so --inhibit-cache` with nothing but dynix's folder on the path
    code = "import sys, dynix.gpu.probe as p; print(sorted(m for m in sys.modules if 'dynix' in m))"
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": str(REPO / "py")},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "['dynix', 'dynix.gpu', 'dynix.gpu.probe']"


def test_status_shows_the_gpus_each_service_was_given(dynix, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    graph = {
        "name": "graph", "pid": None, "argv": ["dynamo"], "ports": {}, "health": "stopped",
        "services": {"VllmWorker": {"pids": [], "restarts": 0},
                     "PrefillWorker": {"pids": [], "restarts": 0}},
        "gpus": {"VllmWorker": [[0], [1]], "PrefillWorker": [[2, 3]]},
    }  # fmt: skip
    (state / "state.json").write_text(json.dumps(
        {"pid": 0, "status": "stopped", "role": "all", "graph": "disagg", "components": [graph]}
    ))  # fmt: skip
    proc = dynix("status", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert rows["VllmWorker"][-2:] == ["0", "1"]
    assert rows["PrefillWorker"][-1] == "2,3"
    data = json.loads(dynix("status", "--state-dir", state, "--json").stdout)
    services = data["components"][0]["services"]
    assert services["PrefillWorker"]["gpus"] == [[2, 3]]
