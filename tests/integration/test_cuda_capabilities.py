"""pkgs/cuda-capabilities.nix with real Nix: whether the PyTorch of the pinned nixpkgs has kernels
for every CUDA capability the stack serves, and the error when it may not be rebuilt.

The inputs are the capability lists read from nixpkgs' torch recipes (torch.cudaCapabilities is
nixpkgs' default list for CUDA 12.8 intersected with torch's own per-CUDA-version list); the
real torch attribute needs nixpkgs, which cannot be fetched here.
"""

from __future__ import annotations

import json

from conftest import REPO, nix

# torch 2.6's lists (release/2.6 build_cuda.sh) stop at 9.0; torch 2.7's "12.8" list has 10.0.
TORCH_2_6 = '[ "6.0" "7.0" "7.5" "8.0" "8.6" "9.0" ]'
TORCH_2_7 = '[ "7.5" "8.0" "8.6" "9.0" "10.0" "12.0" ]'


def plan(torch_builds: str, rebuild: str, check: bool = True):
    stack = f"import {REPO}/pkgs/stack.nix {{ }}"
    expr = (
        f"let s = {stack}; in s.capabilities.torchPlan {{ requested = s.cuda.capabilities; "
        f'torchBuilds = {torch_builds}; rebuild = "{rebuild}"; }}'
    )
    return nix("eval", "--json", "--impure", "--expr", expr, check=check)


def test_a_torch_without_gb200_kernels_stops_evaluation_saying_why():
    proc = plan(TORCH_2_6, "never", check=False)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert "builds kernels for CUDA capabilities 6.0, 7.0, 7.5, 8.0, 8.6, 9.0, not for 10.0" in (
        message
    )
    assert "cudaCapabilities = 9.0, 10.0" in message
    assert 'torchRebuild = \\"if-needed\\"' in message or 'torchRebuild = "if-needed"' in message


def test_by_default_such_a_torch_is_rebuilt_for_the_capabilities():
    assert json.loads(plan(TORCH_2_6, "if-needed").stdout) == {
        "missing": ["10.0"],
        "rebuild": True,
    }


def test_a_torch_with_every_capability_is_the_cached_one():
    assert json.loads(plan(TORCH_2_7, "if-needed").stdout) == {"missing": [], "rebuild": False}
