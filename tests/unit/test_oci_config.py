"""The image config: environment, entrypoint and labels over a base image."""

from __future__ import annotations

from dynix.oci import config as cfg
from dynix.oci.source import parse_ref

AMD64 = {"architecture": "amd64", "os": "linux"}
BASE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video", "LANG=C"],
        "Entrypoint": ["/opt/entry.sh"],
        "Cmd": ["bash"],
        "WorkingDir": "/workspace",
        "Labels": {"com.nvidia.version": "25.03"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    "history": [{"created_by": "base layer"}, {"created_by": "ENV", "empty_layer": True}],
}


def compose(base=None, **settings):
    return cfg.compose(
        platform=AMD64,
        base=base,
        settings=cfg.Settings(**settings),
        bin_dirs=["/nix/store/a-app/bin"],
        labels={"org.opencontainers.image.version": "1.0"},
        diff_ids=["sha256:" + "1" * 64],
        layer_paths=[["/nix/store/a-app"]],
    )


def test_without_base():
    config = compose()
    assert config["architecture"] == "amd64" and config["created"] == cfg.EPOCH
    assert config["config"]["Env"] == [
        "PATH=/nix/store/a-app/bin",
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
    ]
    assert "Entrypoint" not in config["config"]
    assert config["history"] == [
        {"created": cfg.EPOCH, "created_by": "nix store paths: /nix/store/a-app"}
    ]
    assert cfg.store_paths_of(config["history"][0]) == ["/nix/store/a-app"]


def test_base_env_is_merged_ours_first_on_path_and_its_gpu_settings_kept():
    config = compose(BASE, env=[("LANG", "C.UTF-8")])
    env = config["config"]["Env"]
    assert "PATH=/nix/store/a-app/bin:/usr/bin:/bin" in env
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in env
    assert "LANG=C.UTF-8" in env
    assert config["config"]["WorkingDir"] == "/workspace"
    assert config["config"]["Labels"]["com.nvidia.version"] == "25.03"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64, "sha256:" + "1" * 64]
    assert len(config["history"]) == 3
    assert BASE["config"]["Env"][0] == "PATH=/usr/bin:/bin"  # the base is not modified


def test_entrypoint_resets_the_base_cmd_and_cmd_alone_keeps_its_entrypoint():
    assert compose(BASE)["config"]["Entrypoint"] == ["/opt/entry.sh"]
    config = compose(BASE, entrypoint=["dynamo", "serve"])
    assert config["config"]["Entrypoint"] == ["dynamo", "serve"]
    assert "Cmd" not in config["config"]
    config = compose(BASE, cmd=["sh"])
    assert config["config"]["Entrypoint"] == ["/opt/entry.sh"]
    assert config["config"]["Cmd"] == ["sh"]


def test_labels_given_win_over_computed_ones():
    labels = compose(labels={"org.opencontainers.image.version": "9"})["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "9"


def test_flake_labels_leave_out_local_urls():
    local = {"originalUrl": "path:/home/me/dynix", "locked": {"narHash": "sha256-x"}}
    assert cfg.flake_labels(local) == {"dynix.flake.narHash": "sha256-x"}
    remote = {"originalUrl": "github:o/r", "revision": "abc", "locked": {"narHash": "sha256-y"}}
    assert cfg.flake_labels(remote) == {
        "org.opencontainers.image.revision": "abc",
        "dynix.flake.narHash": "sha256-y",
        "org.opencontainers.image.source": "github:o/r",
    }


def test_names_and_versions_of_store_paths():
    assert cfg.split_name("/nix/store/abc-vllm-0.8.4") == ("vllm", "0.8.4")
    assert cfg.split_name("/nix/store/abc-python3.12-torch-2.6.0") == ("python3.12-torch", "2.6.0")
    assert cfg.split_name("/nix/store/abc-source") == ("source", "")


def test_image_locations():
    assert str(parse_ref("oci:/tmp/x:latest")) == "oci:/tmp/x:latest"
    assert parse_ref("oci:/tmp/x").ref is None
    assert parse_ref("docker-archive:/tmp/a.tar").transport == "docker-archive"
    assert parse_ref("docker://localhost:5000/a/b:1").path == "localhost:5000/a/b:1"
