"""Every call dynix makes to Nix goes through here.

Results are parsed from Nix's `--json` output into small dataclasses. The calls work with
Nix 2.8 and later: no `--print-out-paths`, flakes enabled per call rather than assumed in
nix.conf.

A store URL's user and password (`https://user:password@host/…`, a cache added that way) never
reach Nix's argv, which every user of the machine can read (/proc/PID/cmdline): they are given
to Nix in a netrc file of that call's own (`netrc-file`, mode 0600, removed after the call),
beside what Nix's configured netrc file holds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import log, process
from .errors import DynixError, NixError

EXPERIMENTAL = ("--extra-experimental-features", "nix-command flakes")
STORE_DIR = "/nix/store/"

# Phrases with which Nix's downloader reports that it never got an answer from the server,
# as opposed to an answer it did not like (an HTTP error, a hash mismatch).
_UNREACHABLE = (
    "Couldn't resolve host",
    "Could not resolve host",
    "Couldn't connect to server",
    "Connection refused",
    "Connection timed out",
    "Timeout was reached",
    "Network is unreachable",
    "SSL connect error",
)


class Unreachable(NixError):
    """Nix could not reach the server a source lives on."""


@dataclass(frozen=True)
class Built:
    """One installable built by `nix build --json`."""

    drv_path: str
    outputs: dict[str, str]


@dataclass(frozen=True)
class PathInfo:
    """One store path as `nix path-info --json` describes it."""

    path: str
    nar_hash: str
    nar_size: int
    references: list[str] = field(default_factory=list)
    closure_size: int | None = None
    deriver: str | None = None
    signatures: list[str] = field(default_factory=list)
    ca: str | None = None
    valid: bool = True


@dataclass(frozen=True)
class Prefetched:
    """A source fetched into the store, with the hash Nix computed for it (SRI)."""

    hash: str
    store_path: str


# the userinfo of an http(s) URL that starts an argument or a word of one (a list of
# substituters); not `git+https://…`, whose user is git's business
_USERINFO = re.compile(
    r"(?:^|(?<=\s))(?P<scheme>https?://)(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@"
)


@contextlib.contextmanager
def _credentials_apart(argv: Sequence[str]) -> Iterator[list[str]]:
    """`argv` with the user and password of its http(s) URLs taken out, and, if there were
    any, `--option netrc-file F`: F holds them and the lines of Nix's own netrc file."""
    found: dict[str, tuple[str, str]] = {}

    def take(match: re.Match[str]) -> str:
        rest = (match.string[match.end() :].split(None, 1) or [""])[0]  # up to the next word
        host = urllib.parse.urlsplit(match["scheme"] + rest).hostname or ""
        user, password = (urllib.parse.unquote(match[k] or "") for k in ("user", "password"))
        if not host or any(c.isspace() or c == '"' for c in user + password):
            raise DynixError(
                f"{log.redact(match.string)}: a user or password with spaces or quotes cannot "
                "be handed to Nix: give it in Nix's netrc file instead"
            )
        found[host] = (user, password)
        return match["scheme"]

    cleaned = [_USERINFO.sub(take, arg) if "@" in arg else arg for arg in argv]
    if not found:
        yield cleaned
        return
    lines = [
        f"machine {host} login {user} password {password}"
        for host, (user, password) in found.items()
    ]
    with tempfile.TemporaryDirectory(prefix="dynix-netrc.") as folder:
        netrc = os.path.join(folder, "netrc")
        fd = os.open(netrc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join([*lines, _configured_netrc()]) + "\n")
        yield [cleaned[0], "--option", "netrc-file", netrc, *cleaned[1:]]


@functools.cache
def _configured_netrc() -> str:
    """What the netrc file Nix is configured with holds, if dynix can read it (asked once a
    process: a push runs many Nix calls)."""
    path = show_config().get("netrc-file") or ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _run(argv: Sequence[str], **kwargs: Any) -> process.Result:
    with _credentials_apart(argv) as safe:
        return process.run(safe, **kwargs)


def _nix(
    args: Sequence[str],
    *,
    store: str | None = None,
    options: Mapping[str, str] | None = None,
    what: str = "",
    error: type[NixError] = NixError,
    **kwargs: Any,
) -> process.Result:
    argv = ["nix", *EXPERIMENTAL]
    if store:
        argv += ["--store", store]
    for key, value in (options or {}).items():
        argv += ["--option", key, value]
    return _run([*argv, *args], error=error, what=what or f"nix {args[0]}", **kwargs)


def _in_store(installable: str, store_root: str) -> str | None:
    """What in the store an installable names by its path (a link followed), if it does."""
    candidate = installable
    if not candidate.startswith(STORE_DIR) and os.path.lexists(candidate):
        candidate = os.path.realpath(candidate)
        if store_root and candidate.startswith(store_root + STORE_DIR):
            candidate = candidate[len(store_root) :]
    return candidate if candidate.startswith(STORE_DIR) else None


def store_path_of(installable: str, *, store_root: str = "") -> str | None:
    """The store path an installable names directly: `/nix/store/…` (a file inside a store path
    names that path), or a link to one such as `./result`; None for what Nix must evaluate or
    build (a flake reference, a store derivation). With a chroot store (`--store DIR`), links
    point into `store_root`."""
    candidate = _in_store(installable, store_root)
    if candidate is None or candidate.endswith(".drv"):
        return None
    return STORE_DIR + candidate[len(STORE_DIR) :].split("/", 1)[0]


def is_derivation(installable: str, *, store_root: str = "") -> bool:
    """Whether an installable is a store derivation (`/nix/store/….drv`, or a link to one):
    built from the store, with nothing to evaluate."""
    candidate = _in_store(installable, store_root)
    return candidate is not None and candidate.endswith(".drv")


def installables(items: Sequence[str]) -> list[str]:
    """`items` as Nix installables: one that starts with `-` would be read as an option."""
    for item in items:
        if item.startswith("-"):
            raise DynixError(
                f"{item!r} is not an installable: it would reach Nix as an option "
                "(dynix takes no Nix options among installables)"
            )
    return list(items)


def _json(result: process.Result) -> Any:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise DynixError(f"could not parse the JSON printed by {result.argv[0]}: {exc}") from exc


def version() -> str:
    """Nix's version, e.g. `2.8.0`."""
    out = process.run(["nix", "--version"], error=NixError).stdout.strip()
    return out.rsplit(" ", 1)[-1]


def build(
    items: Sequence[str],
    *,
    store: str | None = None,
    system: str | None = None,
    extra_args: Sequence[str] = (),
    options: Mapping[str, str] | None = None,
) -> list[Built]:
    """`nix build --json --no-link`; one `Built` per installable."""
    args = ["build", "--json", "--no-link"]
    if system:
        args += ["--system", system]
    args += [*extra_args, *installables(items)]
    data = _json(_nix(args, store=store, options=options))
    return [Built(item.get("drvPath", ""), dict(item.get("outputs", {}))) for item in data]


def roots(
    items: Sequence[str], *, system: str | None = None, store: str | None = None
) -> list[str]:
    """The store paths `items` name, in order, each once: a store path (or a link to one) as
    it is, once it is checked to be in the store; anything else built (one `nix build`), its
    outputs in the order of their names."""
    root = os.path.abspath(store) if store else ""
    direct = {i: store_path_of(i, store_root=root) for i in items}
    for item, path in direct.items():
        if path and not os.path.exists(root + path):
            raise DynixError(f"{'' if item == path else f'{item}: '}{path} is not in the store")
    to_build = [i for i in items if not direct[i]]
    built = iter(build(to_build, store=store, system=system) if to_build else [])
    found: list[str] = []
    for item in items:
        if path := direct[item]:
            found.append(path)
        else:
            outputs = next(built).outputs
            found += [outputs[k] for k in sorted(outputs)]
    return list(dict.fromkeys(found))


def path_info(
    paths: Sequence[str],
    *,
    recursive: bool = False,
    closure_size: bool = False,
    store: str | None = None,
    system: str | None = None,
    options: Mapping[str, str] | None = None,
) -> list[PathInfo]:
    """`nix path-info --json` for store paths or installables (built already: path-info builds
    nothing)."""
    args = ["path-info", "--json"]
    if recursive:
        args.append("--recursive")
    if closure_size:
        args.append("--closure-size")
    if system:
        args += ["--system", system]
    data = _json(_nix([*args, *installables(paths)], store=store, options=options))
    return [
        PathInfo(
            path=item["path"],
            nar_hash=item.get("narHash", ""),
            nar_size=int(item.get("narSize", 0)),
            references=list(item.get("references", [])),
            closure_size=item.get("closureSize"),
            deriver=item.get("deriver"),
            signatures=list(item.get("signatures", [])),
            ca=item.get("ca"),
            valid=item.get("valid", True),
        )
        for item in data
    ]


def current_system() -> str:
    """The system Nix builds for by default here (`builtins.currentSystem`), e.g. `x86_64-linux`."""
    out = _nix(["eval", "--impure", "--raw", "--expr", "builtins.currentSystem"]).stdout
    return out.strip()


def flake_metadata(flake_ref: str, *, store: str | None = None) -> dict[str, Any]:
    """`nix flake metadata --json FLAKEREF`: where the flake is, its revision and NAR hash."""
    result = _nix(
        ["flake", "metadata", "--json", flake_ref],
        store=store,
        what=f"nix flake metadata {flake_ref}",
    )
    data = _json(result)
    if not isinstance(data, dict):
        raise DynixError(f"unexpected answer from nix flake metadata {flake_ref}")
    return data


def eval_json(
    *,
    expr: str | None = None,
    file: str | None = None,
    installable: str | None = None,
    apply: str | None = None,
    impure: bool = False,
    system: str | None = None,
    store: str | None = None,
) -> Any:
    """`nix eval --json` of an expression, a file, or a flake attribute."""
    args = ["eval", "--json"]
    if impure:
        args.append("--impure")
    if system:
        args += ["--system", system]
    if expr is not None:
        args += ["--expr", expr]
    elif file is not None:
        args += ["--file", file]
    elif installable is not None:
        args.append(installable)
    else:
        raise ValueError("eval_json needs expr, file or installable")
    if apply:
        args += ["--apply", apply]
    return _json(_nix(args, store=store))


@dataclass(frozen=True)
class Derivation:
    """One store derivation as `nix show-derivation` describes it.

    `output_hashes` holds, for a fixed-output derivation, each output's recorded hash as
    (algorithm, hex), e.g. ("sha256", "47c1…"); `recursive` says whether it is a NAR hash.
    """

    path: str
    outputs: dict[str, str]
    input_drvs: dict[str, list[str]]
    input_srcs: list[str]
    env: dict[str, str]
    output_hashes: dict[str, tuple[str, str]] = field(default_factory=dict)
    recursive: bool = False


def show_derivations(
    drv_paths: Sequence[str], *, store: str | None = None
) -> dict[str, Derivation]:
    """`nix show-derivation` of store derivations (`….drv`, nothing is evaluated or built),
    10,000 per call."""
    found: dict[str, Derivation] = {}
    unique = sorted(set(drv_paths))
    for start in range(0, len(unique), 10_000):
        chunk = unique[start : start + 10_000]
        data = _json(_nix(["show-derivation", *chunk], store=store, what="nix show-derivation"))
        for path, drv in data.items():
            outputs, hashes, recursive = {}, {}, False
            for name, out in drv.get("outputs", {}).items():
                outputs[name] = out.get("path", "")
                algo = out.get("hashAlgo", "")
                if algo and out.get("hash"):
                    recursive = algo.startswith("r:")
                    hashes[name] = (algo.removeprefix("r:"), out["hash"])
            found[path] = Derivation(
                path=path,
                outputs=outputs,
                input_drvs={k: list(v) for k, v in drv.get("inputDrvs", {}).items()},
                input_srcs=list(drv.get("inputSrcs", [])),
                env=dict(drv.get("env", {})),
                output_hashes=hashes,
                recursive=recursive,
            )
    return found


def _classify_download_error(exc: NixError) -> NixError:
    if any(phrase in exc.stderr for phrase in _UNREACHABLE):
        return Unreachable(exc.argv, exc.returncode, exc.stderr, what="source unreachable")
    return exc


def prefetch_file(url: str, *, name: str | None = None) -> Prefetched:
    """Download `url` into the store as a flat file (what `fetchurl` hashes)."""
    args = ["store", "prefetch-file", "--json"]
    if name:
        args += ["--name", name]
    try:
        result = _nix([*args, url], options={"download-attempts": "2"}, what="download")
    except NixError as exc:
        raise _classify_download_error(exc) from exc
    data = _json(result)
    return Prefetched(hash=data["hash"], store_path=data["storePath"])


def prefetch_unpacked(url: str, *, name: str | None = None) -> Prefetched:
    """Download and unpack an archive; its hash is that of the unpacked tree (what
    `fetchFromGitHub` and `fetchzip` hash)."""
    argv = ["nix-prefetch-url", "--unpack", "--print-path", "--type", "sha256"]
    if name:
        argv += ["--name", name]
    try:
        result = process.run([*argv, url], error=NixError, what="download")
    except NixError as exc:
        raise _classify_download_error(exc) from exc
    lines = result.stdout.split()
    if len(lines) != 2:
        raise DynixError(f"unexpected output from nix-prefetch-url: {result.stdout.strip()!r}")
    return Prefetched(hash=to_sri(lines[0]), store_path=lines[1])


def to_sri(nix32_sha256: str) -> str:
    """A base-32 sha256 as Nix prints it, in SRI form (`sha256-…=`)."""
    out = _nix(["hash", "to-sri", "--type", "sha256", nix32_sha256]).stdout
    return out.strip()


def hash_path(path: str) -> str:
    """The NAR hash of a file or folder, SRI (what a recursive fixed-output fetch records)."""
    return _nix(["hash", "path", "--type", "sha256", "--sri", path]).stdout.strip()


def hash_file(path: str) -> str:
    """The sha256 of a flat file, SRI (what `fetchurl` and `nix store prefetch-file` record)."""
    return _nix(["hash", "file", "--type", "sha256", "--sri", path]).stdout.strip()


def parse_file(path: str) -> None:
    """Check that a `.nix` file parses (`nix-instantiate --parse`)."""
    process.run(["nix-instantiate", "--parse", path], error=NixError, what=f"parsing {path}")


# -- builds with progress, signing keys, binary caches, configuration -------------------------
# (used by `dynix build`, `dynix cache` and `dynix doctor`)

# Nix remembers what a binary cache held (`narinfo-cache-negative-ttl`: an hour for "lacks it",
# `-positive-ttl`: a month for "has it"); a cache just pushed to, or emptied, must be asked again.
FRESH = {"narinfo-cache-negative-ttl": "0", "narinfo-cache-positive-ttl": "0"}


def show_config(*, features: str | None = None) -> dict[str, Any]:
    """`nix show-config --json`, as {setting: value}.

    dynix turns on `nix-command flakes` for its calls; `features="nix-command"` shows instead
    what the user's own configuration enables (`show-config` itself needs nix-command).
    """
    if features is None:
        data = _json(_nix(["show-config", "--json"]))
    else:
        argv = ["nix", "--extra-experimental-features", features, "show-config", "--json"]
        data = _json(process.run(argv, error=NixError, what="nix show-config"))
    return {key: entry.get("value") for key, entry in data.items()}


def build_with_progress(
    items: Sequence[str],
    on_line: Callable[[str], None],
    *,
    error_text: Callable[[], str] | None = None,
    system: str | None = None,
    options: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> list[Built]:
    """`nix build --json --no-link` with Nix's structured log handed line by line to `on_line`.

    The log is `--log-format internal-json -v` (see `dynix.progress`); `error_text` turns it back
    into plain text for the error raised when the build fails.
    """
    argv = ["nix", *EXPERIMENTAL, "build", "--json", "--no-link"]
    argv += ["--log-format", "internal-json", "-v"]
    if system:
        argv += ["--system", system]
    for key, value in (options or {}).items():
        argv += ["--option", key, value]
    argv += [*extra_args, *installables(items)]
    with _credentials_apart(argv) as safe:
        result = process.stream(
            safe, on_line, error=NixError, what="nix build", error_text=error_text
        )
    # an installable that is a plain store path comes back as {"path": …}
    return [
        Built(item.get("drvPath", ""), dict(item.get("outputs") or {"out": item["path"]}))
        if "path" in item and "outputs" not in item
        else Built(item.get("drvPath", ""), dict(item.get("outputs", {})))
        for item in _json(result)
    ]


def derivation_outputs(items: Sequence[str], *, system: str | None = None) -> list[str]:
    """The output paths of installables, by evaluation only (`nix show-derivation`)."""
    args = ["show-derivation"]
    if system:
        args += ["--system", system]
    data = _json(_nix([*args, *installables(items)]))
    return [out["path"] for drv in data.values() for out in drv.get("outputs", {}).values()]


def derivation_path(installable: str, *, system: str | None = None) -> str:
    """The store derivation an installable evaluates to (`nix path-info --derivation`)."""
    args = ["path-info", "--derivation", "--json"]
    if system:
        args += ["--system", system]
    data = _json(_nix([*args, *installables([installable])]))
    return data[0]["path"]


def generate_secret_key(key_name: str) -> str:
    """A new ed25519 signing key, `NAME:base64` (`nix key generate-secret`); never logged."""
    return _nix(["key", "generate-secret", "--key-name", key_name]).stdout.strip()


def public_key_of(secret_key: str) -> str:
    """The public half of a secret signing key (`nix key convert-secret-to-public`, on stdin)."""
    return _nix(["key", "convert-secret-to-public"], input=secret_key).stdout.strip()


def sign(paths: Sequence[str], key_file: str, *, recursive: bool = False) -> None:
    """Sign store paths in the local store with the key in `key_file` (passed by path)."""
    if not paths:
        return
    args = ["store", "sign", "--key-file", key_file]
    if recursive:
        args.append("--recursive")
    _nix([*args, *paths], what="signing")


def copy(
    paths: Sequence[str],
    *,
    to: str | None = None,
    source: str | None = None,
    store: str | None = None,
    recursive: bool = True,
    options: Mapping[str, str] | None = None,
    what: str = "",
) -> process.Result:
    """`nix copy` of paths (or installables) `--to` a store or `--from` one."""
    if not paths:
        return process.Result([], 0, "", "")
    args = ["copy"]
    if to:
        args += ["--to", to]
    if source:
        args += ["--from", source]
    if not recursive:
        args.append("--no-recursive")
    return _nix(
        [*args, *installables(paths)], store=store, options=options, what=what or "nix copy"
    )


def query_paths(
    store: str, paths: Sequence[str], *, options: Mapping[str, str] | None = None
) -> dict[str, PathInfo]:
    """Which of `paths` `store` holds: one `nix path-info --json` call per 10,000 paths."""
    held: dict[str, PathInfo] = {}
    unique = list(dict.fromkeys(paths))
    for start in range(0, len(unique), 10_000):
        chunk = unique[start : start + 10_000]
        for info in path_info(chunk, store=store, options={**FRESH, **(options or {})}):
            if info.valid:
                held[info.path] = info
    return held


def missing_paths(
    store: str, paths: Sequence[str], *, options: Mapping[str, str] | None = None
) -> list[str]:
    """Which of `paths` `store` lacks (`nix-store --check-validity --print-invalid`): the same
    question as `query_paths` without reading back every narinfo as JSON."""
    missing: list[str] = []
    unique = list(dict.fromkeys(paths))
    for start in range(0, len(unique), 10_000):
        argv = ["nix-store", "--store", store]
        for key, value in {**FRESH, **(options or {})}.items():
            argv += ["--option", key, value]
        argv += ["--check-validity", "--print-invalid", *unique[start : start + 10_000]]
        result = _run(argv, error=NixError, what=f"asking {store}")
        missing += result.stdout.split()
    return missing


def ping_store(url: str, *, timeout: float = 15) -> None:
    """`nix store ping --store URL`: raises `NixError` when the store does not answer."""
    _nix(["store", "ping"], store=url, what=f"nix store ping {url}", timeout=timeout)


def probe_build(system: str, *, timeout: float = 30) -> None:
    """Build a derivation new to the store, then delete it: proves Nix can build here (build
    users, sandbox, daemon) without a builder program, a substituter or network. Nix's own
    `builtin:buildenv` makes an empty output that links its manifest to /dev/null."""
    nonce = os.urandom(8).hex()
    expr = (
        f'derivation {{ name = "dynix-doctor-probe"; system = "{system}"; '
        f'builder = "builtin:buildenv"; manifest = "/dev/null"; derivations = ""; '
        f'nonce = "{nonce}"; }}'
    )
    options = {"substituters": "", "builders": ""}
    result = _nix(
        ["build", "--json", "--no-link", "--expr", expr],
        options=options,
        what="a test build",
        timeout=timeout,
    )
    [item] = _json(result)
    built = Built(item.get("drvPath", ""), dict(item.get("outputs", {})))
    # `nix store delete` (2.8) would take the .drv as an installable and realise it.
    argv = ["nix-store", "--delete", *built.outputs.values(), built.drv_path]
    process.run(argv, check=False, what="nix-store --delete", timeout=timeout)


# -- fixed-output builds: the hashes Nix reports ----------------------------------------------

_MISMATCH = re.compile(
    r"hash mismatch in fixed-output derivation '(?P<drv>/nix/store/[^']+\.drv)':\s*"
    r"specified:\s*(?P<specified>\S+)\s*got:\s*(?P<got>\S+)"
)


@dataclass(frozen=True)
class Mismatch:
    """A fixed-output derivation whose output did not have the hash it declares."""

    drv_path: str
    specified: str
    got: str


def realise(drv_paths: Sequence[str]) -> process.Result:
    """`nix-store --realise --keep-going` of derivations; the result, failed or not: a failed
    build is an answer here (see `hash_mismatches`, `failure_of`)."""
    argv = ["nix-store", "--realise", "--keep-going", *drv_paths]
    return process.run(argv, check=False, error=NixError, what="nix-store --realise")


def hash_mismatches(stderr: str) -> list[Mismatch]:
    """Every `hash mismatch in fixed-output derivation … specified: … got: …` in a build log."""
    return [Mismatch(m["drv"], m["specified"], m["got"]) for m in _MISMATCH.finditer(stderr)]


def failure_of(stderr: str, drv_path: str) -> str:
    """What a build log says about why `drv_path` failed: its `error:` line, with the builder's
    last log lines (`> …`) where Nix shows them; "" when the log does not name it."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error:") and drv_path in line:
            said = [line.removeprefix("error:").strip()]
            for follow in lines[i + 1 :]:
                text = follow.strip()
                if text.startswith("error:"):
                    break
                if text.startswith(">"):
                    said.append(text.removeprefix(">").strip())
            return " | ".join(said)
    return ""
