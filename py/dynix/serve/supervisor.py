"""Running a plan: start in order, wait until ready, restart what dies, stop everything.

Each component (nats, etcd, the `dynamo serve` graph) runs in its own session. Its output goes
to stderr, each line prefixed with the component (or, for the graph, the Dynamo service that
wrote it), and to `logs/<component>.log` under the state dir. Inside the graph, `dynamo serve`
starts every service in a session of its own and does not restart them; the supervisor finds
them under the graph's process, restarts one that dies through the graph's process manager
(circus), and records every process group it saw so that stopping leaves nothing behind.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import IO, Any

from .. import log, process
from ..errors import DynixError
from ..files import write_text_atomic
from . import control_plane, forward, host, jetstream, node, procs, render, state
from .plan import Component, Plan

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SERVICE_TAG = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*):\d+\]")
GRAPH_GRACE = 3.5  # seconds the graph's processes get between SIGTERM and SIGKILL
CONTROL_PLANE_GRACE = 2.0
CONTROL_PLANE_TIMEOUT = 20.0
QUORUM_TIMEOUT = 60.0  # a cluster member waits this long for the others (they start anywhere)
QUORUM_REPORT = 5.0  # seconds between the lines saying what a member still waits for
SERVICE_RECOVERY = 30.0  # a restarted service must be back within this long
_output_lock = threading.Lock()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Stop(Exception):
    """Asked to stop (SIGINT, SIGTERM, SIGHUP: a closed terminal, SIGQUIT)."""


@dataclass
class Running:
    component: Component
    proc: subprocess.Popen[str]
    log_file: IO[str]
    pgids: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    health: str = "starting"


@dataclass
class Deaths:
    """When each component or service died, to apply the restart limit and the backoff."""

    window: float
    times: dict[str, collections.deque[float]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def record(self, name: str) -> int:
        now = time.monotonic()
        recent = self.times.setdefault(name, collections.deque())
        recent.append(now)
        while recent and now - recent[0] > self.window:
            recent.popleft()
        self.total[name] = self.total.get(name, 0) + 1
        return len(recent)


class Stack:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.config = plan.config
        self.sv = plan.config.supervise
        self.running: dict[str, Running] = {}
        self.services: dict[str, list[int]] = {}  # service -> pids seen at the last scan
        self.expected: dict[str, int] = dict(plan.services)
        self.pending: dict[str, float] = {}  # component or service -> when to restart it
        self.recovering: dict[str, float] = {}  # service -> deadline to be back
        self.deaths = Deaths(self.sv.restart_window)
        self.status = "starting"
        self.stop_signal: str | None = None
        self.logs = plan.state_dir / "logs"
        self.started_at = time.time()
        self.ready_seconds: float | None = None
        self.stack_id = uuid.uuid4().hex
        self.etcd_dropped_at = 0.0  # when the etcd member this node used cut its connections

    # -- the whole life ----------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            with state.claim(plan.state_dir) as fresh:
                # Everything that can be checked is checked before anything starts or is written.
                try:
                    state.check_not_running(plan.state_dir, GRAPH_GRACE)
                    if plan.rendered is not None:
                        host.require_non_loopback_ipv4()
                    # An address not of this machine is named by the port check first.
                    host.check_ports([p for c in plan.components for p in c.ports])
                    if plan.rendered is not None and self.config.advertise:
                        host.check_response_address(self.config.advertise)
                except BaseException:
                    if fresh:
                        state.unclaim(plan.state_dir)
                    raise
                self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> None:
        plan = self.plan
        state.prepare(plan.state_dir)
        if plan.rendered is not None:
            write_text_atomic(plan.yaml_path, render.to_yaml(plan.rendered), follow=False)
        if plan.node is not None:  # where the node's processes record their leases
            state.make_folder(plan.leases_dir)
        t0 = time.monotonic()
        try:
            self._start_all()
            self.ready_seconds = time.monotonic() - t0
            self.status = "ready"
            self._write_state()
            self._announce()
            self._monitor()
        except Stop:
            log.info(f"dynix: {self.stop_signal}: stopping the stack")
        except DynixError:
            self.status = "failed"
            raise
        finally:
            self._shutdown()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name
        if self.status != "stopping":
            self.status = "stopping"
            raise Stop()

    def _announce(self) -> None:
        what = []
        if self.plan.component("nats"):
            what.append("control plane")
        if self.plan.rendered is not None and self.plan.node is not None:
            what.append(
                f"graph {self.config.graph}"
                + ("" if self.plan.node.whole else f" ({', '.join(self.plan.node.services)})")
            )
            if self.plan.runs_frontend:
                print(f"{self.plan.frontend}/v1", flush=True)  # where to send requests
            self._say_what_listens()
        log.info(
            f"dynix: {' and '.join(what)} ready in {self.ready_seconds:.1f} s "
            f"(state: {state.path(self.plan.state_dir)})"
        )

    def _say_what_listens(self) -> None:
        graph = self.plan.component("graph")
        ports = [p for p in (graph.ports if graph else []) if p.what == "frontend"]
        if not ports:
            log.info(
                "dynix: listening: no frontend on this node; Dynamo's services accept response "
                f"streams on {host.response_address() or 'a non-loopback address'} (ports of "
                "their choosing)"
            )
            return
        bind = ports[0].host
        if bind != self.config.host:
            log.warn(
                f"the frontend listens on {bind}:{self.config.port}, not {self.config.host}: "
                f"Dynamo 0.2.0's own {self.config.graph} frontend takes no address (the flake's "
                "Dynamo, patched, does); firewall the port"
            )
        log.info(
            f"dynix: listening: frontend {bind}:{self.config.port}; Dynamo's services also accept "
            "response streams on a non-loopback address of this machine (ports of their choosing)"
        )

    # -- starting ----------------------------------------------------------------------------
    def _start_all(self) -> None:
        plane = [c for c in self.plan.components if c.health_url]
        for component in plane:  # nats and etcd start side by side
            self._spawn(component)
        if any(c.peers for c in plane):
            self._wait_quorum(plane)  # the members of a cluster, together
        for component in plane:
            if not component.peers:
                self._wait_healthy(component)
        self._write_state()
        graph = self.plan.component("graph")
        if graph is not None and self.plan.prefill_queue is not None:
            stream, replicas = self.plan.prefill_queue
            leaf = self.config.control_plane.local_nats_url
            done = jetstream.ensure_replicated(leaf, stream, replicas)
            log.info(f"dynix: the prefill queue: {done}")
        if graph is not None:
            # What an earlier run here left registered (check_not_running has made sure none
            # of its processes runs), now that etcd answers.
            self._revoke_leases(dead_only=True)
            self._spawn(self._with_answering_etcd(graph))
            self._write_state()
            self._wait_ready()

    def _spawn(self, component: Component) -> Running:
        for name, text in component.files.items():
            state.write_file(self.plan.state_dir, name, text)
        log_file = state.open_log(self.plan.state_dir, component.name)
        log_file.write(f"--- dynix: starting {component.name}: {' '.join(component.argv)}\n")
        log_file.flush()
        env = {**component.env, procs.STACK_ENV: self.stack_id}
        proc = process.spawn(component.argv, cwd=component.cwd, extra_env=env)
        running = Running(component, proc, log_file, pgids={proc.pid})
        self.running[component.name] = running
        threading.Thread(target=self._pump, args=(running,), daemon=True).start()
        return running

    def _pump(self, running: Running) -> None:
        name = running.component.name
        assert running.proc.stdout is not None
        for raw in running.proc.stdout:
            line = ANSI.sub("", raw.rstrip("\n"))
            prefix = name
            if name == "graph" and (tag := SERVICE_TAG.search(line)):
                prefix = tag.group(1)
            if name == "etcd-proxy" and (dropped := forward.DROPPED.search(line)):
                self.etcd_dropped_at = float(dropped.group(1))
            with _output_lock:
                if not running.log_file.closed:  # closed once the process is stopped
                    running.log_file.write(line + "\n")
                    running.log_file.flush()
                sys.stderr.write(f"{prefix:>12} | {line}\n")
                sys.stderr.flush()

    def _wait_quorum(self, components: list[Component]) -> None:
        """Wait, bounded, until each member has a quorum with the others, saying what it waits
        for every few seconds (the other members start on their own machines)."""
        t0 = time.monotonic()
        deadline, report = t0 + QUORUM_TIMEOUT, t0 + QUORUM_REPORT
        waiting = list(components)
        why: dict[str, str] = {}
        while waiting:
            for component in list(waiting):
                self._fail_if_exited(component.name, "while waiting for the cluster")
                ok, why[component.name] = control_plane.member_ready(
                    component.name, component.health_url, component.peers
                )
                if ok:
                    self.running[component.name].health = "healthy"
                    waiting.remove(component)
                    log.info(f"dynix: {component.name}: quorum ({why[component.name]})")
            now = time.monotonic()
            if not waiting:
                return
            detail = "; ".join(why[c.name] for c in waiting)
            if now >= deadline:
                raise DynixError(
                    f"the control-plane cluster has no quorum after {QUORUM_TIMEOUT:g} s "
                    f"({detail}): are the other members ({self._peers()}) running and reachable?"
                )
            if now >= report:
                report = now + QUORUM_REPORT
                log.info(f"dynix: waiting for the cluster ({now - t0:.0f} s): {detail}")
            time.sleep(0.2)

    def _peers(self) -> str:
        cp = self.config.control_plane
        if cp.members:
            return ", ".join(m for m in cp.members if m != cp.advertise)
        return ", ".join([*cp.etcd_urls, *cp.nats_urls])

    def _wait_healthy(self, component: Component) -> None:
        if component.peers:
            self._wait_quorum([component])
            return
        deadline = time.monotonic() + CONTROL_PLANE_TIMEOUT
        while time.monotonic() < deadline:
            self._fail_if_exited(component.name, "while starting")
            if control_plane.healthy(component.health_url, timeout=0.5):
                self.running[component.name].health = "healthy"
                return
            time.sleep(0.02)
        raise DynixError(
            f"{component.name} did not become healthy within {CONTROL_PLANE_TIMEOUT:g} s "
            f"({component.health_url}); see {self.logs / (component.name + '.log')}"
        )

    def _with_answering_etcd(self, graph: Component) -> Component:
        """The graph, given only the etcd members that answer now: Dynamo 0.2.0's etcd client
        takes a list but sends its first request (the lease) to any member of it, a stopped
        one too, and then fails to start about half the time."""
        if self.plan.component("etcd") or self.plan.component("etcd-proxy"):
            return graph  # on this machine: the local member, or the proxy that finds one
        urls = self.plan.etcd_urls
        answering = [u for u in urls if control_plane.healthy(u.rstrip("/") + "/health")]
        if not answering:
            raise DynixError(f"etcd at {','.join(urls)} is not answering /health")
        if answering == urls:
            return graph
        down = ", ".join(u for u in urls if u not in answering)
        log.warn(f"etcd at {down} is not answering /health: the graph is given the others")
        return replace(graph, env={**graph.env, "ETCD_ENDPOINTS": ",".join(answering)})

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.sv.ready_timeout
        why = ""
        while time.monotonic() < deadline:
            self._fail_if_exited("graph", "before it was ready")
            for name in ("nats", "etcd"):
                if name in self.running:
                    self._fail_if_exited(name, "while the graph started")
            self._scan_graph()
            ok, why = self._graph_ready(timeout=5)
            if ok:
                self.running["graph"].health = "ready"
                self.expected.update({s: max(len(p), 1) for s, p in self.services.items()})
                return
            time.sleep(0.2)
        raise DynixError(
            f"the graph was not ready within {self.sv.ready_timeout:g} s ({why}); "
            f"see {self.logs / 'graph.log'}"
        )

    def _graph_ready(self, timeout: float) -> tuple[bool, str]:
        """A node with the frontend: it lists the model and answers. Without: every process
        of its services has its endpoint in etcd, under the lease it recorded."""
        if self.plan.runs_frontend:
            return control_plane.frontend_ready(
                self.plan.frontend, self.config.served_name, timeout=timeout
            )
        mine: dict[str, set[int]] = {}
        for lease in node.leases(self.plan.leases_dir):
            if procs.alive(lease.pid):
                mine.setdefault(lease.service, set()).add(lease.lease)
        namespace = render.namespace(self.config.graph)
        for service, expected in self.plan.services.items():
            try:
                keys = control_plane.instance_keys(self.plan.etcd_urls, namespace, service)
            except DynixError as exc:
                return False, str(exc)
            registered = {int(k.rsplit(":", 1)[1], 16) for k in keys if ":" in k}
            have = len(mine.get(service, set()) & registered)
            if have < expected:
                return False, f"{service}: {have} of {expected} processes registered in etcd"
        return True, "ready"

    def _fail_if_exited(self, name: str, when: str) -> None:
        running = self.running[name]
        code = running.proc.poll()
        if code is not None:
            raise DynixError(
                f"{name} exited with code {code} {when}: {self._last_line(name)} "
                f"(log: {self.logs / (name + '.log')})"
            )

    def _last_line(self, name: str) -> str:
        try:
            lines = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("--- dynix")]
        errors = [ln for ln in meaningful if "error" in ln.lower()]
        return (errors or meaningful or [""])[-1][:300]

    # -- supervising -------------------------------------------------------------------------
    def _monitor(self) -> None:
        last_health = 0.0
        while True:
            now = time.monotonic()
            for name, running in list(self.running.items()):
                if name not in self.pending and running.proc.poll() is not None:
                    self._died(name, f"exited with code {running.proc.returncode}")
            if "graph" in self.running and "graph" not in self.pending:
                self._check_etcd_moved()
                self._check_services()
            for name, due in list(self.pending.items()):
                if now >= due and self.pending.pop(name, None) is not None:  # a graph restart
                    self._restart(name)  # takes its services' pending restarts along
            if now - last_health > 2.0:
                last_health = now
                self._check_health()
            time.sleep(0.2)

    def _check_etcd_moved(self) -> None:
        """The etcd member this node's processes reached through the forwarder cut their
        connections and no longer answers (the forwarder moved on): a process that started
        before holds a broken connection (some notice only at their next request, their
        watches dead meanwhile), so it starts again at once: each such service, or the whole
        graph when that is all of them."""
        dropped, self.etcd_dropped_at = self.etcd_dropped_at, 0.0
        if not dropped:
            return
        stale = {
            service
            for service, pids in self.services.items()
            for pid in pids
            if (began := procs.started(pid)) is not None and began < dropped
        }
        why = "lost the etcd member its processes used (the forwarder moved on)"
        if not stale:
            return
        if stale >= set(self.expected):
            self._died("graph", why)
            return
        for service in sorted(stale - self.pending.keys()):
            self._died(service, why)

    def _died(self, name: str, how: str) -> None:
        count = self.deaths.record(name)
        where = self.logs / f"{'graph' if name in self.expected else name}.log"
        if count > self.sv.max_restarts:
            raise DynixError(
                f"{name} {how}; it died {count} times within {self.sv.restart_window:g} s, "
                f"more than the limit of {self.sv.max_restarts}: stopping the stack (see {where})"
            )
        delay = min(self.sv.backoff * 2 ** (count - 1), 10.0)
        log.info(
            f"dynix: {name} {how}; restarting it in {delay:.1f} s ({count}/{self.sv.max_restarts})"
        )
        self.pending[name] = time.monotonic() + delay
        if name in self.running:
            self.running[name].health = "restarting"
        self._write_state()

    def _restart(self, name: str) -> None:
        if name in self.expected:
            if self._circusctl_restart(name):
                self.recovering[name] = time.monotonic() + SERVICE_RECOVERY
                return
            log.info(f"dynix: restarting the whole graph to bring {name} back")
            name = "graph"
        old = self.running[name]
        procs.stop_groups(self._groups(old), GRAPH_GRACE, reap=old.proc.poll)
        with _output_lock:
            old.log_file.close()
        component = old.component
        if name == "graph":
            self._revoke_leases(dead_only=True)
            for service in self.expected:  # the whole graph comes back: so do they
                self.pending.pop(service, None)
                self.recovering.pop(service, None)
            # From the plan again, with the etcd members that answer now.
            component = self._with_answering_etcd(self.plan.component("graph") or component)
        self._spawn(component)
        if old.component.health_url:
            self._wait_healthy(old.component)
        if name == "graph":
            self.services = {}
            self._wait_ready()
        self.running[name].health = "healthy" if name != "graph" else "ready"
        log.info(f"dynix: {name} restarted")
        self._write_state()

    def _circusctl_restart(self, service: str) -> bool:
        """Restart a service through the graph's circus; False when that fails."""
        if not self.plan.circusctl:
            return False
        endpoint = f"tcp://127.0.0.1:{self.sv.circus_port}"
        assert self.plan.node is not None
        watcher = self.plan.node.watcher(service)
        # `restart` both starts a stopped watcher and replaces one whose process circus has not
        # yet noticed is gone (`start` would be a no-op on such a watcher).
        command = "restart"
        result = process.run(
            [self.plan.circusctl, "--endpoint", endpoint, "--timeout", "10", command, watcher],
            check=False,
            timeout=30,
        )
        if result.returncode != 0 or "error" in result.stdout.lower():
            log.warn(
                f"circusctl {command} {watcher} failed: {(result.stdout + result.stderr).strip()}"
            )
            return False
        log.info(f"dynix: {service} restarted ({command} {watcher})")
        return True

    def _scan_graph(self) -> None:
        """Record the graph's processes: their groups (to stop them) and its services."""
        graph = self.running.get("graph")
        if graph is None:
            return
        table = procs.snapshot()
        found: dict[str, list[int]] = {}
        for info in procs.descendants(graph.proc.pid, table):
            graph.pgids.add(info.pgid)
            if info.state != "Z" and (service := procs.service_name(info)):
                found.setdefault(service, []).append(info.pid)
        graph.pgids = {g for g in graph.pgids if g == graph.proc.pid or procs.members({g}, table)}
        if found != self.services:
            self.services = found
            self._write_state()

    def _check_services(self) -> None:
        self._scan_graph()
        self._revoke_leases(dead_only=True)
        now = time.monotonic()
        for service, expected in self.expected.items():
            if service in self.pending:
                continue
            have = len(self.services.get(service, []))
            if have >= expected:
                self.recovering.pop(service, None)
                continue
            deadline = self.recovering.get(service)
            if deadline is not None and now < deadline:
                continue  # restarted, not back yet
            self.recovering.pop(service, None)
            self._died(service, f"has {have} of {expected} processes running")

    def _check_health(self) -> None:
        changed = False
        for name, running in self.running.items():
            if name in self.pending:
                continue
            if running.component.health_url:
                health = (
                    "healthy"
                    if control_plane.healthy(running.component.health_url)
                    else "unhealthy"
                )
            else:
                ok, _ = self._graph_ready(timeout=2)
                health = "ready" if ok else "not answering"
            changed |= health != running.health
            running.health = health
        if changed:
            self._write_state()

    # -- stopping ----------------------------------------------------------------------------
    def _groups(self, running: Running) -> set[int]:
        if running.component.name == "graph":
            self._scan_graph()
        return set(running.pgids)

    def _shutdown(self) -> None:
        if self.status != "failed":
            self.status = "stopping"
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        self._write_state()
        left: list[procs.ProcInfo] = []
        graph = self.running.get("graph")
        if graph is not None:
            left += procs.stop_groups(self._groups(graph), GRAPH_GRACE, reap=graph.proc.poll)
            self._revoke_leases()
            if self.plan.runs_frontend:
                self._deregister()
        plane = [r for n, r in self.running.items() if n != "graph"]
        groups = {g for r in plane for g in r.pgids}
        left += procs.stop_groups(
            groups, CONTROL_PLANE_GRACE, reap=lambda: [r.proc.poll() for r in plane]
        )
        # What was being started as the stop began (circus forks services in sessions of their
        # own): found by the stack's mark in their environment.
        reap_all = lambda: [r.proc.poll() for r in self.running.values()]  # noqa: E731
        left = procs.stop_marked(self.stack_id, GRAPH_GRACE, reap=reap_all)
        for running in self.running.values():
            running.proc.poll()
            with _output_lock:
                running.log_file.close()
        if self.status != "failed":
            self.status = "stopped"
        self._write_state()
        if left:
            pids = ", ".join(f"{p.pid} ({' '.join(p.argv[:2])})" for p in left)
            raise DynixError(f"could not stop every process of the stack: {pids} still running")
        log.info("dynix: stack stopped")

    def _revoke_leases(self, dead_only: bool = False) -> None:
        """Revoke the etcd leases this node's processes recorded (of those no longer running,
        with `dead_only`), so that their registrations go at once and not a lease's time to
        live later."""
        folder = self.plan.leases_dir
        for lease in node.leases(folder):
            if dead_only and procs.alive(lease.pid):
                continue
            try:
                control_plane.revoke_lease(self.plan.etcd_urls, lease.lease)
            except DynixError as exc:
                log.warn(f"could not revoke the lease of {lease.service} (pid {lease.pid}): {exc}")
                continue
            node.forget(folder, lease)
            if dead_only:
                log.info(f"dynix: revoked the lease of {lease.service} (pid {lease.pid}, gone)")

    def _deregister(self) -> None:
        name = self.config.served_name
        try:
            deleted = control_plane.deregister_model(self.plan.etcd_urls, name)
        except DynixError as exc:
            log.warn(f"could not remove the registration of {name!r} from etcd: {exc}")
            return
        if deleted:
            log.info(f"dynix: removed the registration of {name!r} from etcd")

    # -- the state file ----------------------------------------------------------------------
    def _write_state(self) -> None:
        plan = self.plan
        components = []
        for name, running in self.running.items():
            component = running.component
            live = running.proc.poll() is None
            entry: dict[str, Any] = {
                "name": name,
                "pid": running.proc.pid if live else None,
                "pgids": sorted(running.pgids) if live or name == "graph" else [],
                "argv": component.argv,
                "ports": {p.what: p.port for p in component.ports},
                "log": str(self.logs / f"{name}.log"),
                "health": running.health if live else "stopped",
                "restarts": self.deaths.total.get(name, 0),
            }
            if name == "graph":
                entry["services"] = {
                    s: {"pids": pids, "restarts": self.deaths.total.get(s, 0)}
                    for s, pids in sorted(self.services.items())
                }
                entry["gpus"] = {p.service: p.to_json() for p in plan.gpu_placement}
            components.append(entry)
        data = {
            "pid": os.getpid(),
            "stack_id": self.stack_id,
            "status": self.status,
            "role": plan.role,
            "graph": self.config.graph if plan.rendered is not None else None,
            "model": self.config.served_name,
            "frontend": f"{plan.frontend}/v1" if plan.runs_frontend else None,
            "services_here": list(plan.node.services) if plan.node is not None else [],
            "etcd": plan.etcd_urls,
            "nats": plan.nats_url,
            "state_dir": str(plan.state_dir),
            "config": str(plan.yaml_path) if plan.rendered is not None else None,
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
            "components": components,
        }
        try:
            state.write(plan.state_dir, data)
        except DynixError as exc:
            log.warn(str(exc))
