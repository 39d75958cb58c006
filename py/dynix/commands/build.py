"""`dynix build`: `nix build` with dynix's defaults and a progress display."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import click

from .. import cache as caches
from .. import log, nix, platforms
from ..errors import NixError
from ..output import emit_json
from ..progress import BuildLog, Display
from .cache import config_option, load_config


@click.command()
@click.argument("installables", nargs=-1)
@click.option("--system", help="Build for this system (e.g. aarch64-linux).")
@click.option(
    "--builders",
    help="Remote builders, as Nix's builders setting: 'ssh-ng://HOST aarch64-linux'.",
)
@click.option(
    "--cache",
    "cache_names",
    multiple=True,
    help="Substitute from these configured caches only (default: all with a public key).",
)
@click.option("--print-build-logs", "-L", is_flag=True, help="Show every build-log line.")
@click.option("--json", "as_json", is_flag=True, help="Print installable → outputs as JSON.")
@config_option
@click.pass_context
def build(
    ctx: click.Context,
    installables: tuple[str, ...],
    system: str | None,
    builders: str | None,
    cache_names: tuple[str, ...],
    print_build_logs: bool,
    as_json: bool,
) -> None:
    """Build INSTALLABLES (default: the flake in this folder) and print their store paths."""
    installables = installables or (".",)
    cfg = load_config(ctx)
    chosen = [cfg.cache(n) for n in cache_names] if cache_names else list(cfg.caches.values())
    options = caches.substituter_options(chosen)
    builders = builders if builders is not None else cfg.builders
    if builders:
        options["builders"] = builders
    targets = platforms.systems_of(installables, system)
    if targets:
        nix_config = nix.show_config()
        remote = platforms.parse_builders(builders or str(nix_config.get("builders", "")))
        for target in targets:
            way = platforms.route(target, nix_config, remote)
            if way.how != "native":
                log.info(f"building for {target} by {way.how} ({way.detail})")

    progress = BuildLog()
    display = Display(progress, print_logs=print_build_logs)
    try:
        built = nix.build_with_progress(
            installables,
            display,
            error_text=progress.state.error_text,
            system=system,
            options=options,
        )
    except NixError:
        display.finish()
        if not print_build_logs:
            for line in progress.state.log_tail(lines=20):
                log.info(f"  {line}")
        raise
    display.finish()
    if as_json:
        emit_json(by_installable(installables, built, system))
        return
    for b in built:
        for path in b.outputs.values():
            click.echo(path)


def by_installable(
    installables: Sequence[str], built: Sequence[nix.Built], system: str | None
) -> dict[str, dict[str, Any]]:
    """installable → {drvPath, outputs}. Nix 2.8's `build --json` lists results in its own
    order and without the installable, so with several, each is matched through the derivation
    it evaluates to (or the store path it names)."""

    def entry(b: nix.Built) -> dict[str, Any]:
        return {"drvPath": b.drv_path or None, "outputs": b.outputs}

    if len(installables) == 1 and len(built) == 1:
        return {installables[0]: entry(built[0])}
    by_drv = {b.drv_path: b for b in built if b.drv_path}
    by_out = {path: b for b in built for path in b.outputs.values()}
    result = {}
    for arg in installables:
        path = nix.store_path_of(arg)
        if path and path in by_out:
            result[arg] = entry(by_out[path])
            continue
        real = os.path.realpath(arg) if os.path.islink(arg) else arg
        drv = real if real.endswith(".drv") else nix.derivation_path(real, system=system)
        if drv in by_drv:
            result[arg] = entry(by_drv[drv])
    return result
