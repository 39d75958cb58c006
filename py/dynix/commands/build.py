"""`dynix build`: `nix build` with dynix's defaults and a progress display."""

from __future__ import annotations

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
        if len(built) == len(installables):
            emit_json(
                {
                    arg: {"drvPath": b.drv_path, "outputs": b.outputs}
                    for arg, b in zip(installables, built, strict=True)
                }
            )
        else:
            emit_json({b.drv_path: {"drvPath": b.drv_path, "outputs": b.outputs} for b in built})
        return
    for b in built:
        for path in b.outputs.values():
            click.echo(path)
