"""`dynix serve`: run Dynamo's disaggregated serving stack, supervised; `dynix serve init`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import DynixError
from ..serve import config as stack_config
from ..serve import host, plan, render
from ..serve.config import GRAPHS, ROLES


def _control_plane(value: str | None) -> dict[str, str]:
    """`local`, or etcd and NATS URLs, comma-separated (`http://…` for etcd, `nats://…`)."""
    if value is None:
        return {}
    if value == "local":
        return {"cp_mode": "local"}
    parts = [p.strip() for p in value.split(",") if p.strip()]
    nats = [p for p in parts if p.startswith("nats://")]
    etcd = [p for p in parts if not p.startswith("nats://")]
    if not nats or not etcd:
        raise DynixError(
            f"--control-plane must be `local` or ETCD_URL[,ETCD_URL...],NATS_URL[,NATS_URL...] "
            f"(e.g. http://10.0.0.1:2379,nats://10.0.0.1:4222), not {value!r}"
        )
    return {"cp_mode": "external", "cp_etcd": ",".join(etcd), "cp_nats": ",".join(nats)}


def _cluster(advertise: str | None, cluster: str | None, role: str, joins: bool) -> dict[str, str]:
    """`--advertise ADDR` (listen there, be reached there) and `--cluster ADDR,ADDR,...` (one
    member of many)."""
    if cluster is not None and joins:
        raise DynixError(
            "--cluster runs a control-plane member; --control-plane joins one: not both"
        )
    if cluster is not None and role != "control-plane":
        raise DynixError(
            "--cluster runs a member of a clustered control plane: use it with "
            "--role control-plane (graph nodes join with --control-plane URLs)"
        )
    out: dict[str, str] = {}
    if advertise is not None:
        address = advertise.strip()
        out["advertise"] = address
        if role in ("all", "control-plane"):
            out |= {"cp_advertise": address, "cp_host": address}
        if role in ("all", "graph"):
            out["host"] = address  # the frontend listens there
    if cluster is not None:
        out |= {"cp_cluster": cluster, "cp_mode": "local"}
    return out


def _components(values: tuple[str, ...], role: str) -> tuple[str, ...] | None:
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    if not names:
        if values:
            raise DynixError("--component needs a service name, e.g. --component PrefillWorker")
        return None
    if role == "control-plane":
        raise DynixError("--component chooses the graph's services: use it with --role graph")
    return names


@click.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The stack config (TOML, [serve] tables). Default: ./dynix.toml if present.",
)
@click.option("--graph", type=click.Choice(GRAPHS), help="The Dynamo graph to serve.")
@click.option("--model", help="The model (Hugging Face name or local path).")
@click.option("--decode-workers", type=click.IntRange(min=1), help="Decode (VllmWorker) workers.")
@click.option("--prefill-workers", type=click.IntRange(min=1), help="Prefill workers.")
@click.option("--port", type=click.IntRange(1, 65535), help="The HTTP frontend's port.")
@click.option(
    "--control-plane",
    "control_plane",
    metavar="local|ETCD_URLS,NATS_URLS",
    help="Run etcd and NATS here (local), or join existing ones by URL (every member's).",
)
@click.option(
    "--advertise",
    metavar="ADDR",
    help="This machine's address, where other nodes reach it: etcd, NATS and the frontend "
    "listen there.",
)
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="SERVICE[,SERVICE...]",
    help="Run only these services of the graph on this node (e.g. PrefillWorker; or "
    "Frontend,Processor,Router,VllmWorker); repeatable. Default: every service.",
)
@click.option(
    "--cluster",
    metavar="ADDR,ADDR,...",
    help="Every control-plane member's address (this one's too): run one member of a "
    "clustered etcd and NATS JetStream (with --role control-plane --advertise).",
)
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="all",
    show_default=True,
    help="Run the control plane, the graph, or both (a multi-node head runs both or "
    "control-plane; other nodes run graph).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Logs, data and state.json.")
@click.option(
    "--examples",
    type=click.Path(path_type=Path),
    help="Dynamo's examples/llm folder (default: $DYNIX_EXAMPLES, else beside `dynamo`).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the processes, their environment and Dynamo's config; start nothing.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    config_path: Path | None,
    graph: str | None,
    model: str | None,
    decode_workers: int | None,
    prefill_workers: int | None,
    port: int | None,
    control_plane: str | None,
    advertise: str | None,
    components: tuple[str, ...],
    cluster: str | None,
    role: str,
    state_dir: Path | None,
    examples: Path | None,
    dry_run: bool,
) -> None:
    """Run Dynamo's serving stack: etcd and NATS, then the graph, supervised.

    Without a GPU the default graph is `echo`, which answers with the last user message and
    sends long prompts through its prefill worker. Ready when the frontend lists the model and
    answers a completion; SIGINT/SIGTERM stop everything.
    """
    if ctx.invoked_subcommand is not None:
        return
    path = stack_config.find_config(config_path)
    config = stack_config.load(path).override(
        graph=graph,
        model=model,
        decode_workers=decode_workers,
        prefill_workers=prefill_workers,
        port=port,
        state_dir=str(state_dir) if state_dir else None,
        examples=str(examples) if examples else None,
        components=_components(components, role),
        **_control_plane(control_plane),
        **_cluster(advertise, cluster, role, control_plane is not None),
    )
    runs_graph = role in ("all", "graph")
    gpus = host.gpu_count() if runs_graph else 0
    if runs_graph:
        config = plan.choose_graph(config, gpus)
    the_plan = plan.build(config, role, gpus=gpus, dry_run=dry_run)
    if dry_run:
        if the_plan.rendered is not None:
            needs = render.gpu_needs(the_plan.rendered)
            if needs:
                total = sum(n.total for n in needs)
                click.echo(f"# GPUs: {total} needed, {gpus} present (nvidia-smi -L)")
        click.echo(plan.describe(the_plan), nl=False)
        return
    from ..serve.supervisor import Stack

    Stack(the_plan).run()


@serve.command()
@click.argument("path", type=click.Path(path_type=Path), default=stack_config.CONFIG_NAME)
@click.option("--force", is_flag=True, help="Overwrite an existing file with the defaults.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="TABLE.KEY=VALUE",
    help="Set one key (e.g. serve.port=9000); repeatable. Edits keep the file's comments.",
)
def init(path: Path, force: bool, settings: tuple[str, ...]) -> None:
    """Write a commented stack config (default: ./dynix.toml), or edit keys of one."""
    parsed = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise DynixError(f"--set takes TABLE.KEY=VALUE, not {item!r}")
        parsed[key.strip()] = value.strip()
    stack_config.write_default(path, force=force, settings=parsed)
    click.echo(str(path))
