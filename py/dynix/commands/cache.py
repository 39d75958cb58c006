"""`dynix cache`: the binary caches dynix shares builds through."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import cache as caches
from .. import log, nix
from ..config import Cache, Config, check_name, default_path, normalise_url, parse_key
from ..errors import DynixError
from ..files import locked
from ..output import emit_json, table
from ..progress import human_bytes

CONFIG_KEY = "dynix.config"


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta[CONFIG_KEY] = value


# Accepted before and after the subcommand: `dynix cache --config F list`, `dynix cache list
# --config F`.
config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    expose_value=False,
    callback=_remember_config,
    help="The dynix config file (default: ./dynix.toml, else ~/.config/dynix/config.toml).",
)


def load_config(ctx: click.Context, *, edit: bool = False) -> Config:
    """The config file. To `edit` it, it is locked until the command ends and read under the
    lock; to read it, a `--config` that names no file is an error."""
    explicit = ctx.meta.get(CONFIG_KEY)
    path = Path(explicit) if explicit is not None else default_path()
    if edit:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DynixError(f"cannot create {path.parent}: {exc.strerror}") from exc
        ctx.with_resource(locked(path))  # writes follow a link to the file it names
    elif explicit is not None and not path.exists():
        raise DynixError(f"config file {path} not found")
    return Config.load(path)


@click.group()
@config_option
def cache() -> None:
    """Binary caches: add them, push signed builds, pull trusting their key, see what they hold."""


@cache.command()
@config_option
@click.argument("name")
@click.argument("url")
@click.option("--public-key", help="The cache's public key, NAME:BASE64 (trusted when pulling).")
@click.option(
    "--secret-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The secret key to sign pushed paths with (mode 0600).",
)
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    url: str,
    public_key: str | None,
    secret_key_file: Path | None,
) -> None:
    """Register cache NAME at URL: cachix:NAME, https://NAME.cachix.org or a Nix store URL
    (file://, http(s)://, s3://, ssh://, ssh-ng://)."""
    check_name(name)
    store_url, cachix = normalise_url(url)
    if public_key:
        parse_key(public_key)
    key_path = None
    if secret_key_file is not None:
        key_path = secret_key_file.expanduser().resolve()
        derived = caches.check_secret_key_file(key_path, public_key=public_key)
        public_key = public_key or derived
    cfg = load_config(ctx, edit=True)
    if name in cfg.caches:
        raise DynixError(
            f"cache {name!r} is already in {cfg.path} ({cfg.caches[name].url}): "
            f"dynix cache remove {name} first"
        )
    cfg.set_cache(Cache(name, store_url, public_key, str(key_path) if key_path else None, cachix))
    cfg.save()
    log.info(f"added cache {name} ({store_url}) to {cfg.path}")


@cache.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the caches as JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The configured caches."""
    cfg = load_config(ctx)
    if as_json:
        emit_json([c.to_json() for c in cfg.caches.values()])
        return
    rows = [
        [c.name, c.kind, c.url, c.public_key or "-", "yes" if c.secret_key_file else "no"]
        for c in cfg.caches.values()
    ]
    if rows:
        click.echo(table(rows, ["NAME", "KIND", "URL", "PUBLIC KEY", "CAN SIGN"]))
    else:
        log.info(f"no caches in {cfg.path}: dynix cache add NAME URL")


@cache.command()
@config_option
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Forget cache NAME (its key files are left where they are)."""
    cfg = load_config(ctx, edit=True)
    cfg.remove_cache(name)
    cfg.save()
    log.info(f"removed cache {name} from {cfg.path}")


@cache.command()
@config_option
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the secret key (default: ~/.config/dynix/keys/NAME.sec).",
)
@click.option("--key-name", help="The name inside the key (default: NAME-1).")
@click.option(
    "--replace", is_flag=True, help="Replace the key pair the cache already has in the config."
)
@click.pass_context
def keygen(
    ctx: click.Context, name: str, out: Path | None, key_name: str | None, replace: bool
) -> None:
    """Make a signing key pair for cache NAME: the secret key goes to a new file (mode 0600),
    the public key into the config."""
    cfg = load_config(ctx, edit=True)
    entry = cfg.cache(name)
    if entry.cachix:
        raise DynixError(f"{name!r} is a cachix cache: make its key with cachix generate-keypair")
    if (entry.public_key or entry.secret_key_file) and not replace:
        raise DynixError(
            f"cache {name!r} already has public key {entry.public_key or '(none)'} (secret key "
            f"file {entry.secret_key_file or '(none)'}): a new pair replaces it, and whoever "
            "trusts the old key will refuse paths signed with the new one; pass --replace"
        )
    if out is None:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        out = Path(base) / "dynix" / "keys" / f"{name}.sec"
    out = out.expanduser().resolve()
    if out.exists():
        raise DynixError(f"{out} exists: dynix never overwrites a key; choose another --out")
    secret = nix.generate_secret_key(key_name or f"{name}-1")
    public = nix.public_key_of(secret)
    caches.write_secret_key(out, secret)
    cfg.set_cache(Cache(name, entry.url, public, str(out), entry.cachix))
    cfg.save()
    log.info(f"secret key written to {out}")
    if entry.public_key and entry.public_key != public:
        log.info(f"public key of {name} changed from {entry.public_key} to {public}")
    click.echo(public)


@cache.command()
@config_option
@click.argument("installables", nargs=-1, required=True)
@click.option("--to", "to", required=True, help="The cache to push to.")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="How many paths to upload at once (default: one per core, up to 8; cachix: its own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def push(
    ctx: click.Context, installables: tuple[str, ...], to: str, jobs: int | None, as_json: bool
) -> None:
    """Sign and upload the closure of INSTALLABLES (store paths or flake outputs) to a cache.

    Only what the cache lacks is signed and uploaded, several paths at once, each after the
    paths it refers to.
    """
    target = load_config(ctx).cache(to)
    report = caches.push(target, installables, jobs=jobs)
    if as_json:
        emit_json(report.to_json())
        return
    click.echo(
        f"{target.name}: {report.present} paths ({human_bytes(report.present_bytes)}) already "
        f"there, {report.uploaded} uploaded ({human_bytes(report.uploaded_bytes)})"
    )


@cache.command()
@config_option
@click.argument("installables", nargs=-1, required=True)
@click.option("--from", "source", required=True, help="The cache to pull from.")
@click.option("--store", help="The Nix store to pull into (default: the local store).")
@click.pass_context
def pull(ctx: click.Context, installables: tuple[str, ...], source: str, store: str | None) -> None:
    """Fetch INSTALLABLES from a cache, accepting only paths signed with its key."""
    origin = load_config(ctx).cache(source)
    paths, count = caches.pull(origin, installables, store=store)
    log.info(f"{origin.name}: {count} paths copied")
    for path in paths:
        click.echo(path)


@cache.command()
@config_option
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--write-nix-conf",
    "nix_conf",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[PATH]",
    help="Append the lines to PATH (default: ~/.config/nix/nix.conf) instead of printing them.",
)
@click.pass_context
def use(ctx: click.Context, names: tuple[str, ...], nix_conf: str | None) -> None:
    """The nix.conf lines that make Nix substitute from the caches NAMES."""
    cfg = load_config(ctx)
    lines = caches.nix_conf_lines([cfg.cache(n) for n in names])
    if nix_conf is None:
        click.echo("\n".join(lines))
        return
    path = Path(nix_conf).expanduser() if nix_conf else caches.user_nix_conf()
    added = caches.append_nix_conf(path, lines)
    log.info(f"{path}: {'added ' + str(len(added)) + ' lines' if added else 'already set'}")
    log.info("(with a Nix daemon, extra substituters count only for trusted users)")


@cache.command()
@config_option
@click.argument("installables", nargs=-1, required=True)
@click.option("--cache", "names", multiple=True, help="Only these caches (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def status(
    ctx: click.Context, installables: tuple[str, ...], names: tuple[str, ...], as_json: bool
) -> None:
    """Which paths of the closure of INSTALLABLES each configured cache holds."""
    cfg = load_config(ctx)
    chosen = [cfg.cache(n) for n in names] if names else list(cfg.caches.values())
    if not chosen:
        raise DynixError(f"no caches in {cfg.path}: dynix cache add NAME URL")
    result = caches.status(chosen, installables)
    if result.not_local:
        log.warn(f"{len(result.not_local)} paths are not built here: their closure is unknown")
    data = result.to_json()
    if as_json:
        emit_json(data)
        return
    rows = []
    for cs in result.caches:
        entry = data["caches"][cs.cache.name]
        held, total = len(entry["held"]), len(data["paths"])
        state = f"unreachable: {cs.error}" if cs.error else f"{held}/{total} paths"
        size = (
            human_bytes(entry["heldBytes"])
            + " / "
            + human_bytes(entry["heldBytes"] + entry["missingBytes"])
        )
        rows.append([cs.cache.name, state, size, ", ".join(_names(entry["missing"])[:5])])
    click.echo(table(rows, ["CACHE", "HOLDS", "NAR BYTES", "MISSING (FIRST 5)"]))


def _names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[-1].split("-", 1)[-1] for p in paths]
