"""Fixtures for `dynix image` tests: tiny flakes built with a static busybox, and a registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import nix

# What `from image_fixtures import *` brings into a test module: the pytest fixtures.
__all__ = ["cache_env", "flake", "flake_v2", "registry"]

BUSYBOX_AARCH64 = os.environ.get("DYNIX_TEST_BUSYBOX_AARCH64", "/var/cache/dynix/arm64/busybox")

# Three packages per system: busybox itself, a library holding a greeting, and an app whose
# script (run by that busybox) prints the greeting. The app refers to both, so the closure is
# app -> {lib, busybox}, lib -> busybox.
FLAKE = """\
{
  outputs = { self }:
    let
      forSystem = system: bb:
        let
          mk = name: script: derivation {
            inherit name system;
            builder = "${bb}/busybox";
            args = [ "sh" "-c" script ];
          };
          busybox = mk "busybox-1.35" ''
            $builder mkdir -p $out/bin
            $builder cp $builder $out/bin/busybox
          '';
          lib = mk "libgreet-1.0" ''
            $builder mkdir -p $out/share
            echo "@GREETING@" > $out/share/greeting
            echo ${busybox} > $out/share/uses
          '';
          app = mk "app-2.0" ''
            $builder mkdir -p $out/bin
            bb=${busybox}/bin/busybox
            printf '#!%s sh\\necho "$(%s cat %s) @APP@ from $(%s uname -m)"\\n' \\
              $bb $bb ${lib}/share/greeting $bb > $out/bin/app
            $builder chmod 555 $out/bin/app
          '';
          # Incompressible data, for tests that need a layer slow enough to interrupt.
          big = mk "big-1" ''
            $builder mkdir -p $out
            $builder head -c 40000000 /dev/urandom > $out/data
          '';
        in { inherit busybox lib app big; default = app; };
    in {
      packages = builtins.mapAttrs forSystem { @SYSTEMS@ };
    };
}
"""


@dataclass
class Flake:
    path: Path

    def ref(self, attr: str = "app") -> str:
        return f"path:{self.path}#{attr}"

    def build(
        self, attr: str = "app", system: str = "x86_64-linux", store: str | None = None
    ) -> str:
        args = ["build", "--json", "--no-link", "--system", system]
        if store:
            args += ["--store", store]
        out = nix(*args, self.ref(attr), timeout=600).stdout
        return json.loads(out)[0]["outputs"]["out"]


def write_flake(
    folder: Path,
    busybox: Path,
    *,
    greeting: str = "hello",
    app: str = "v1",
    aarch64: bool = False,
) -> Flake:
    """A fixture flake in `folder` (outside git, so it evaluates as a plain path)."""
    folder.mkdir(parents=True, exist_ok=True)
    systems = {"x86_64-linux": "bb"}
    if aarch64:
        systems["aarch64-linux"] = "bb-aarch64"
        (folder / "bb-aarch64").mkdir(exist_ok=True)
        shutil.copy(aarch64_busybox(), folder / "bb-aarch64" / "busybox")
    (folder / "bb").mkdir(exist_ok=True)
    shutil.copy(busybox, folder / "bb" / "busybox")
    attrs = " ".join(f"{s} = ./{d};" for s, d in systems.items())
    text = FLAKE.replace("@SYSTEMS@", attrs).replace("@GREETING@", greeting).replace("@APP@", app)
    (folder / "flake.nix").write_text(text)
    return Flake(folder)


def aarch64_busybox() -> Path:
    path = Path(BUSYBOX_AARCH64)
    if not path.is_file():
        pytest.fail(
            f"no aarch64 busybox at {path}: scripts/setup-debian puts Debian's "
            "busybox-static:arm64 there (or set DYNIX_TEST_BUSYBOX_AARCH64)"
        )
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.is_file() or "enabled" not in binfmt.read_text():
        pytest.fail("qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    host: str
    root: Path
    log: Path

    def url(self, repo: str) -> str:
        return f"docker://{self.host}/{repo}"

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def blob_uploads(self) -> int:
        """Blob uploads the registry finished so far (each ends with a PUT ... ?digest=)."""
        return sum(1 for line in self.log_lines() if '"PUT /v2/' in line and "digest=" in line)


def bcrypt_line(user: str, password: str) -> str:
    """An htpasswd line (bcrypt, the only kind the registry takes): Python's crypt module
    (libxcrypt) up to 3.12, else apache2-utils' htpasswd."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None:
        return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
    if not shutil.which("htpasswd"):
        pytest.fail("no bcrypt here: Python's crypt module is gone; install apache2-utils")
    out = subprocess.run(
        ["htpasswd", "-nbB", user, password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip() + "\n"


def start_registry(
    folder: Path, *, users: dict[str, str] | None = None
) -> tuple[Registry, subprocess.Popen]:
    """A real registry (distribution's `docker-registry serve`) on 127.0.0.1, data in `folder`.

    With `users`, it asks for basic authentication (htpasswd) on every request.
    """
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    auth = ""
    if users:
        htpasswd = folder / "htpasswd"
        htpasswd.write_text("".join(bcrypt_line(u, p) for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: dynix-test\n    path: {htpasswd}\n"
    config = folder / "config.yml"
    config.write_text(
        auth
        + textwrap.dedent(
            f"""\
            version: 0.1
            log:
              level: info
              accesslog:
                disabled: false
            storage:
              filesystem:
                rootdirectory: {storage}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{port}
            """
        )
    )
    log = folder / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    registry = Registry(f"127.0.0.1:{port}", storage, log)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1):
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_registry(proc)
                pytest.fail(f"docker-registry did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    return registry, proc


def stop_registry(proc: subprocess.Popen) -> None:
    """Stop the registry we started (its own process group), and nothing else."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def layer_digests(layout: Path) -> list[str]:
    """The layer digests of the single image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs/sha256" / digest.split(":")[1]).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


def leftovers(folder: Path) -> list[str]:
    """Temporary names dynix may have left in `folder` (it must leave none)."""
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")
    )


@pytest.fixture(scope="session")
def flake(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Flake:
    """The fixture flake, for x86_64-linux and aarch64-linux."""
    return write_flake(tmp_path_factory.mktemp("flake") / "v1", busybox, aarch64=True)


@pytest.fixture(scope="session")
def flake_v2(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Flake:
    """The same flake with only the app package changed."""
    return write_flake(tmp_path_factory.mktemp("flake") / "v2", busybox, app="v2", aarch64=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry shared by the tests of one module."""
    reg, proc = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        stop_registry(proc)


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    """A layer cache of the test's own."""
    return {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}


def unpack(layout: str, dest: Path) -> Path:
    """`umoci unpack` an image (oci:DIR:TAG form without the prefix); returns the rootfs."""
    subprocess.run(
        ["umoci", "unpack", "--image", layout, str(dest)], check=True, capture_output=True
    )
    return dest / "rootfs"


def run_in(rootfs: Path, *argv: str) -> str:
    return subprocess.run(
        ["chroot", str(rootfs), *argv], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def skopeo_json(*args: str) -> dict:
    return json.loads(
        subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout
    )
