"""Binary caches: push signed closures to them, pull from them trusting only their key, and ask
them which paths they hold.

A cache is any Nix store URL (`file://`, `http(s)://`, `s3://`, `ssh://`, `ssh-ng://`) or a
cachix cache (`dynix.config.Cache`). Nix does the work (`dynix.nix`): dynix asks the cache about
the whole closure in one call, then signs and copies only what is missing, several `nix copy`
processes at once, each path after the paths it refers to (`upload_steps`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from . import log, nix, process, progress
from .config import Cache, login_host, parse_key, public_from_secret
from .errors import CommandError, DynixError, NixError
from .files import create_new, locked, read_text, write_text_atomic

BINARY_CACHES = ("file", "http", "https", "s3")
_UNSIGNED = re.compile(r"cannot add path '([^']+)' because it lacks a valid signature")


# -- keys -------------------------------------------------------------------------------------
def check_secret_key_file(path: Path, *, public_key: str | None = None) -> str:
    """Check a secret key file (exists, private to its owner, a Nix secret key, matching
    `public_key`) and return its public key. The key itself is never shown."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DynixError(f"secret key file {path} does not exist") from None
    except OSError as exc:
        raise DynixError(f"cannot read secret key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DynixError(f"secret key file {path} is not a regular file")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise DynixError(
            f"secret key file {path} is readable by other users (mode {mode:04o}): chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DynixError(f"cannot read secret key file {path}: {exc}") from None
    try:
        public = public_from_secret(text)
    except DynixError:
        raise DynixError(f"{path} does not hold a Nix secret key (NAME:BASE64)") from None
    if public_key and public != public_key.strip():
        raise DynixError(f"secret key file {path} does not match the public key {public_key}")
    return public


def write_secret_key(path: Path, secret_key: str) -> None:
    """Create `path` (mode 0600, never replacing an existing file) holding `secret_key`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DynixError(f"cannot create {path.parent}: {exc.strerror}") from None
    if os.path.lexists(path):
        raise DynixError(f"{path} exists: dynix never overwrites a key (use --out)")
    create_new(path, secret_key + "\n", mode=0o600)


def signing_key(cache: Cache) -> Path:
    """The checked secret key file of `cache`, for pushing."""
    path = cache.secret_key_path()
    if path is None:
        raise DynixError(
            f"cache {cache.name!r} has no secret-key-file to sign with: "
            f"run `dynix cache keygen {cache.name}`"
        )
    check_secret_key_file(path, public_key=cache.public_key)
    return path


# -- which paths ------------------------------------------------------------------------------
def _split(installables: Sequence[str]) -> tuple[list[str], list[str]]:
    """Store paths given directly (or through a link such as `./result`), and the rest."""
    paths: list[str] = []
    others: list[str] = []
    for arg in installables:
        path = nix.store_path_of(arg)
        if path:
            paths.append(path)
        else:
            others.append(arg)
    return paths, others


def output_paths(installables: Sequence[str], *, system: str | None = None) -> list[str]:
    """Store paths as given (a `./result` link is followed); other installables are
    evaluated (not built) to their output paths."""
    paths, to_evaluate = _split(installables)
    if to_evaluate:
        paths += nix.derivation_outputs(to_evaluate, system=system)
    return list(dict.fromkeys(paths))


def realise(installables: Sequence[str]) -> list[str]:
    """Store paths as given; other installables built (with progress on stderr) to outputs."""
    paths, to_build = _split(installables)
    if to_build:
        log = progress.BuildLog()
        display = progress.Display(log)
        try:
            built = nix.build_with_progress(to_build, display, error_text=log.state.error_text)
        finally:
            display.finish()
        paths += [out for b in built for out in b.outputs.values()]
    return list(dict.fromkeys(paths))


def local_closure(installables: Sequence[str]) -> list[nix.PathInfo]:
    """The closure of installables in the local store (built first when they are not)."""
    return nix.path_info(realise(installables), recursive=True)


# -- status -----------------------------------------------------------------------------------
@dataclass
class CacheStatus:
    cache: Cache
    held: dict[str, nix.PathInfo] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Status:
    paths: list[nix.PathInfo]
    not_local: list[str]  # top-level paths not in the local store: their closure is unknown
    caches: list[CacheStatus]

    def to_json(self) -> dict[str, Any]:
        all_paths = [p.path for p in self.paths] + self.not_local
        sizes = {p.path: p.nar_size for p in self.paths}
        out: dict[str, Any] = {"paths": all_paths, "notLocal": self.not_local, "caches": {}}
        for cs in self.caches:
            held = [p for p in all_paths if p in cs.held]
            out["caches"][cs.cache.name] = {
                "url": cs.cache.url,
                "error": cs.error,
                "held": held,
                "missing": [p for p in all_paths if p not in cs.held],
                "heldBytes": sum(sizes.get(p, cs.held[p].nar_size) for p in held),
                "missingBytes": sum(sizes.get(p, 0) for p in all_paths if p not in cs.held),
            }
        return out


def status(caches: Sequence[Cache], installables: Sequence[str]) -> Status:
    """Which paths of the installables' closure each cache holds: one query per cache."""
    tops = output_paths(installables)
    try:  # usually all built here: the closure in one call
        closure, not_local = nix.path_info(tops, recursive=True), []
    except NixError:
        local = {p.path for p in nix.path_info(tops) if p.valid}
        closure = nix.path_info([p for p in tops if p in local], recursive=True) if local else []
        not_local = [p for p in tops if p not in local]
    paths = [p.path for p in closure] + not_local
    result = []
    for cache in caches:
        cs = CacheStatus(cache)
        try:
            cs.held = nix.query_paths(cache.url, paths)
        except CommandError as exc:
            cs.error = exc.tail or str(exc)
        result.append(cs)
    return Status(closure, not_local, result)


# -- push -------------------------------------------------------------------------------------
@dataclass
class PushReport:
    cache: str
    present: int
    present_bytes: int
    uploaded: int
    uploaded_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "alreadyPresent": {"paths": self.present, "narBytes": self.present_bytes},
            "uploaded": {"paths": self.uploaded, "narBytes": self.uploaded_bytes},
        }


def cachix_push_argv(cache: Cache, paths: Sequence[str], *, jobs: int | None = None) -> list[str]:
    """The `cachix push` command line for `paths` (which cachix reads from stdin); cachix runs
    several uploads at once itself (`jobs` when given, else its own default)."""
    if not cache.cachix:
        raise DynixError(f"cache {cache.name!r} is not a cachix cache")
    return ["cachix", "push", *(["--jobs", str(jobs)] if jobs else []), cache.cachix]


def cachix_env(cache: Cache, environ: dict[str, str] | None = None) -> dict[str, str]:
    """What `cachix push` needs in its environment: an auth token (from the environment or
    cachix's own config) and, for a self-signed cache, the signing key from the key file."""
    environ = dict(os.environ if environ is None else environ)
    dhall = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "cachix/cachix.dhall"
    if not environ.get("CACHIX_AUTH_TOKEN") and not dhall.is_file():
        raise DynixError(
            f"pushing to cachix cache {cache.cachix!r} needs CACHIX_AUTH_TOKEN in the environment "
            "(or `cachix authtoken`)"
        )
    extra: dict[str, str] = {}
    key = cache.secret_key_path()
    if key is not None and not environ.get("CACHIX_SIGNING_KEY"):
        check_secret_key_file(key, public_key=cache.public_key)
        # cachix takes the key's base64 part alone
        extra["CACHIX_SIGNING_KEY"] = key.read_text(encoding="utf-8").strip().partition(":")[2]
    return extra


# What uploading one path costs besides its bytes (a compressor set up, a narinfo signed and
# written), counted as that many NAR bytes; and the least work a layer must hold to be split
# across processes, since each costs a Nix start-up and its own query of the cache.
PER_PATH_BYTES = 64 * 1024
SPLIT_MIN_BYTES = 16 * PER_PATH_BYTES


def _weight(infos: Sequence[nix.PathInfo]) -> int:
    """The work of uploading `infos`, in NAR bytes (`PER_PATH_BYTES` added for each path)."""
    return sum(p.nar_size + PER_PATH_BYTES for p in infos)


def upload_steps(missing: Sequence[nix.PathInfo], jobs: int) -> list[list[list[str]]]:
    """The order in which to upload `missing`: steps run one after another, each a list of
    groups copied at the same time (one `nix copy` per group).

    A cache takes a path only once the paths it refers to are there, so the paths are layered:
    a path's missing references all sit in earlier layers, and the paths of one layer are
    independent of each other. A layer with enough work is split into up to `jobs` groups of
    about equal weight (paths with the same NAR content stay together, so no file is written
    twice); runs of smaller layers go to a single `nix copy`, which orders them itself.
    """
    if not missing:
        return []
    if jobs <= 1:
        return [[[p.path for p in missing]]]
    by_path = {p.path: p for p in missing}
    depth: dict[str, int] = {}
    for start in by_path:  # iterative depth-first: closures can be thousands of paths deep
        stack = [start]
        while stack:
            path = stack[-1]
            if path in depth:
                stack.pop()
                continue
            refs = [r for r in by_path[path].references if r in by_path and r != path]
            pending = [r for r in refs if r not in depth]
            if pending:
                stack.extend(pending)
                continue
            depth[path] = 1 + max((depth[r] for r in refs), default=-1)
            stack.pop()
    layers: list[list[nix.PathInfo]] = [[] for _ in range(max(depth.values()) + 1)]
    for info in missing:
        layers[depth[info.path]].append(info)

    steps: list[list[list[str]]] = []
    run: list[str] = []  # consecutive small layers, for one `nix copy`
    for layer in layers:
        if len(layer) < 2 or _weight(layer) < SPLIT_MIN_BYTES:
            run += [p.path for p in layer]
            continue
        if run:
            steps.append([run])
            run = []
        steps.append(_balanced(layer, jobs))
    if run:
        steps.append([run])
    return steps


def _balanced(layer: Sequence[nix.PathInfo], jobs: int) -> list[list[str]]:
    """`layer` in up to `jobs` groups of about equal weight, heaviest first into the lightest
    group; paths with the same NAR hash stay in one group."""
    same: dict[str, list[nix.PathInfo]] = {}
    for info in layer:
        same.setdefault(info.nar_hash or info.path, []).append(info)
    bundles = sorted(same.values(), key=_weight, reverse=True)
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(bundles)))]
    loads = [0] * len(groups)
    for bundle in bundles:
        i = loads.index(min(loads))
        groups[i] += [p.path for p in bundle]
        loads[i] += _weight(bundle)
    return groups


def _all_at_once(calls: Sequence[Callable[[], object]]) -> None:
    """Run `calls` on threads and wait for all of them; the first failure is raised once the
    others have finished (a copy under way is let finish: the cache takes whole paths only)."""
    if len(calls) == 1:
        calls[0]()
        return
    failures: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class _Uploads:
    """Copies groups of paths to one cache, saying on stderr how far the push has got."""

    def __init__(self, name: str, target: str, missing: Sequence[nix.PathInfo]) -> None:
        self.name, self.target = name, target
        self.sizes = {p.path: p.nar_size for p in missing}
        self.total_bytes = sum(self.sizes.values())
        self.paths = self.bytes = 0
        self.lock = threading.Lock()

    def copy(self, group: Sequence[str]) -> None:
        nix.copy(group, to=self.target, recursive=False, what=f"copying to {self.name}")
        with self.lock:
            self.paths += len(group)
            self.bytes += sum(self.sizes[p] for p in group)
            log.info(
                f"{self.name}: {self.paths} of {len(self.sizes)} paths uploaded "
                f"({progress.human_bytes(self.bytes)} of {progress.human_bytes(self.total_bytes)})"
            )


def push(cache: Cache, installables: Sequence[str], *, jobs: int | None = None) -> PushReport:
    """Sign and copy what the cache lacks of the installables' closure, `jobs` copies at once
    (by default one per core, up to 8; cachix has its own default)."""
    if jobs is not None and jobs < 1:
        raise DynixError(f"--jobs must be at least 1 (got {jobs})")
    key = None if cache.cachix else signing_key(cache)
    env = cachix_env(cache) if cache.cachix else {}
    closure = local_closure(installables)
    with _exclusive(cache):
        return _push(cache, closure, key, env, jobs)


@contextlib.contextmanager
def _exclusive(cache: Cache) -> Iterator[None]:
    """Pushes to one `file://` cache one at a time: two `nix copy` writing one folder at once
    fail in Nix 2.8 ("coroutine has finished"). Other stores serialise writes themselves."""
    if urlparse(cache.url).scheme != "file":
        yield
        return
    folder = Path(urlparse(cache.url).path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DynixError(f"cannot create cache folder {folder}: {exc.strerror}") from None
    with locked(folder):
        yield


def _push(
    cache: Cache,
    closure: Sequence[nix.PathInfo],
    key: Path | None,
    env: dict[str, str],
    jobs: int | None,
) -> PushReport:
    lacking = set(nix.missing_paths(cache.url, [p.path for p in closure]))
    missing = [p for p in closure if p.path in lacking]
    present = [p for p in closure if p.path not in lacking]
    paths = [p.path for p in missing]
    log.info(
        f"{cache.name}: {len(present)} of {len(closure)} paths already there, "
        f"uploading {len(missing)}"
    )
    if paths and cache.cachix:
        process.run(
            cachix_push_argv(cache, paths, jobs=jobs),
            input="\n".join(paths) + "\n",
            extra_env=env,
            stderr_to_terminal=True,
            what=f"cachix push {cache.cachix}",
        )
    elif paths:
        assert key is not None
        if urlparse(cache.url).scheme in BINARY_CACHES:
            # the binary cache store signs each narinfo it writes: no second pass over the paths
            # and the local store is left as it was
            target = with_param(cache.url, "secret-key", str(key))
        else:  # ssh stores take the signatures the paths carry here
            nix.sign(paths, str(key))
            target = cache.url
        uploads = _Uploads(cache.name, target, missing)
        for step in upload_steps(missing, jobs or process.default_jobs()):
            _all_at_once([partial(uploads.copy, group) for group in step])
    return PushReport(
        cache.name,
        len(present),
        sum(p.nar_size for p in present),
        len(missing),
        sum(p.nar_size for p in missing),
    )


def with_param(url: str, key: str, value: str) -> str:
    """`url` with `?key=value` (or `&key=value`) added: Nix's store URL parameters."""
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


# -- pull -------------------------------------------------------------------------------------
def pull(
    cache: Cache, installables: Sequence[str], *, store: str | None = None
) -> tuple[list[str], int]:
    """Copy the installables' closure from `cache`, accepting only paths signed by its key.

    Returns the installables' store paths and how many paths were copied.
    """
    if not cache.public_key:
        raise DynixError(
            f"cache {cache.name!r} has no public-key to check signatures with: "
            f"dynix cache add {cache.name} URL --public-key KEY"
        )
    parse_key(cache.public_key)
    paths = output_paths(installables)
    options = {
        **nix.FRESH,
        "trusted-public-keys": cache.public_key,
        "require-sigs": "true",
        "substituters": "",
    }
    try:
        result = nix.copy(
            paths, source=cache.url, store=store, options=options, what=f"pulling from {cache.name}"
        )
    except NixError as exc:
        match = _UNSIGNED.search(exc.stderr)
        if match:
            key_name = cache.public_key.partition(":")[0]
            raise DynixError(
                f"refused {match.group(1)} from cache {cache.name!r}: "
                f"not signed by its key {key_name}"
            ) from None
        raise
    copied = re.search(r"copying (\d+) paths", result.stderr)
    if copied:
        return paths, int(copied.group(1))
    return paths, 1 if "copying path" in result.stderr else 0


# -- nix.conf ---------------------------------------------------------------------------------
def nix_conf_lines(caches: Sequence[Cache]) -> list[str]:
    """The nix.conf lines that make Nix substitute from `caches`, trusting their keys."""
    missing = [c.name for c in caches if not c.public_key]
    if missing:
        name = missing[0]
        hint = f"dynix cache add {name} URL --public-key K"
        raise DynixError(f"cache {name!r} has no public-key ({hint})")
    hosts = [h for h in dict.fromkeys(login_host(c.url) for c in caches) if h]
    return [
        "extra-substituters = " + " ".join(_without_credentials(c.url) for c in caches),
        "extra-trusted-public-keys = " + " ".join(str(c.public_key) for c in caches),
        *[
            f"# the login for {host} belongs in Nix's netrc file (netrc-file), not in nix.conf"
            for host in hosts
        ],
    ]


def _without_credentials(url: str) -> str:
    """`url` without its user and password: nix.conf is readable by every user."""
    if not login_host(url):
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def substituter_options(caches: Sequence[Cache]) -> dict[str, str]:
    """`--option`s adding `caches` as substituters for one Nix call (`dynix build`)."""
    caches = [c for c in caches if c.public_key]
    if not caches:
        return {}
    return {
        "extra-substituters": " ".join(c.url for c in caches),
        "extra-trusted-public-keys": " ".join(str(c.public_key) for c in caches),
    }


def user_nix_conf() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nix" / "nix.conf"


def append_nix_conf(path: Path, lines: Sequence[str]) -> list[str]:
    """Add the `lines` not already in `path` (created if need be) at its end; returns those
    added. The file is locked, read and replaced whole, so concurrent edits are not lost."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DynixError(f"cannot create {path.parent}: {exc.strerror}") from None
    with locked(path) as real:
        try:
            text = read_text(real)
        except FileNotFoundError:
            text = ""
        existing = text.splitlines()
        new = [line for line in lines if line not in (e.strip() for e in existing)]
        if new:
            gap = "\n" if existing and existing[-1].strip() else ""
            ending = "" if not text or text.endswith("\n") else "\n"
            write_text_atomic(real, text + ending + gap + "\n".join(new) + "\n")
    return new
