"""Nix's structured log (`--log-format internal-json`) read into progress, and shown on stderr.

With `--log-format internal-json -v` Nix writes one `@nix {…}` JSON object per stderr line:
activities that `start` and `stop` (a build, a download, the copying of paths), `result`s attached
to them (progress counters, build log lines, phases) and plain `msg`s (errors and warnings).
`BuildLog` folds those lines into a `BuildState`; `Display` draws that state on the terminal.
The numbers below are Nix's own (`ActivityType` and `ResultType` in its `logging.hh`), stable
since Nix 2.0.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

# ActivityType
ACT_UNKNOWN = 0
ACT_COPY_PATH = 100
ACT_FILE_TRANSFER = 101
ACT_REALISE = 102
ACT_COPY_PATHS = 103
ACT_BUILDS = 104
ACT_BUILD = 105
ACT_OPTIMISE_STORE = 106
ACT_VERIFY_PATHS = 107
ACT_SUBSTITUTE = 108
ACT_QUERY_PATH_INFO = 109
ACT_POST_BUILD_HOOK = 110
ACT_BUILD_WAITING = 111

# ResultType
RES_FILE_LINKED = 100
RES_BUILD_LOG_LINE = 101
RES_UNTRUSTED_PATH = 102
RES_CORRUPTED_PATH = 103
RES_SET_PHASE = 104
RES_PROGRESS = 105
RES_SET_EXPECTED = 106
RES_POST_BUILD_LOG_LINE = 107

# Verbosity of `msg` lines
LVL_ERROR = 0
LVL_WARN = 1

PREFIX = "@nix "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STORE_NAME = re.compile(r"^/[^ ]*/[0-9a-z]{32}-")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def store_name(path: str) -> str:
    """`/nix/store/<hash>-hello-2.12.drv` → `hello-2.12`."""
    name = _STORE_NAME.sub("", path)
    return name[: -len(".drv")] if name.endswith(".drv") else name


@dataclass
class Activity:
    id: int
    type: int
    text: str
    fields: list[Any]
    parent: int
    done: int = 0
    expected: int = 0
    running: int = 0
    failed: int = 0
    phase: str | None = None
    stopped: bool = False
    # what this activity expects of other activity types (RES_SET_EXPECTED), e.g. bytes to fetch
    expects: dict[int, int] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=25))


@dataclass
class BuildState:
    """What a `nix build` has done so far, as read from its structured log."""

    activities: dict[int, Activity] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)  # derivations whose build finished
    substituted: list[str] = field(default_factory=list)  # paths fetched from a cache
    errors: list[str] = field(default_factory=list)  # `msg` lines at error level, plain text
    warnings: list[str] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)  # stderr lines that were not `@nix`

    def _of(self, kind: int) -> list[Activity]:
        return [a for a in self.activities.values() if a.type == kind]

    def _counter(self, kind: int) -> tuple[int, int, int, int]:
        acts = self._of(kind)
        return (
            sum(a.done for a in acts),
            sum(a.expected for a in acts),
            sum(a.running for a in acts),
            sum(a.failed for a in acts),
        )

    @property
    def builds(self) -> tuple[int, int, int, int]:
        """(done, expected, running, failed) derivation builds, as Nix counts them."""
        return self._counter(ACT_BUILDS)

    @property
    def copies(self) -> tuple[int, int, int, int]:
        """(done, expected, running, failed) paths copied (substituted) into the store.

        Substitutions report progress on their `copy-paths` activity; `nix copy` does not, so
        its `copy-path` activities are counted as well.
        """
        done, expected, running, failed = self._counter(ACT_COPY_PATHS)
        each = self._of(ACT_COPY_PATH)
        finished = sum(1 for a in each if a.stopped)
        return (
            max(done, finished),
            max(expected, len(each)),
            max(running, len(each) - finished),
            failed,
        )

    @property
    def running_builds(self) -> list[Activity]:
        return [a for a in self._of(ACT_BUILD) if not a.stopped]

    @property
    def current_build(self) -> str | None:
        """The name of the most recently started build that is still running."""
        running = self.running_builds
        return store_name(running[-1].fields[0]) if running and running[-1].fields else None

    @property
    def bytes_downloaded(self) -> int:
        return sum(a.done for a in self._of(ACT_FILE_TRANSFER))

    @property
    def bytes_expected(self) -> int:
        """Bytes Nix announced it will download (0 when it did not say)."""
        announced = sum(a.expects.get(ACT_FILE_TRANSFER, 0) for a in self.activities.values())
        return max(announced, sum(a.expected for a in self._of(ACT_FILE_TRANSFER)))

    def log_tail(self, drv: str | None = None, lines: int = 10) -> list[str]:
        """The last build-log lines of `drv` (or of the last build that logged anything)."""
        builds = [a for a in self._of(ACT_BUILD) if a.log]
        if drv is not None:
            builds = [a for a in builds if a.fields and a.fields[0] == drv]
        return list(builds[-1].log)[-lines:] if builds else []

    def error_text(self) -> str:
        """The errors Nix reported, as plain text (what `--log-format bar` would have shown)."""
        return "\n".join(self.errors + self.other_lines[-20:])

    def summary(self) -> dict[str, Any]:
        done, expected, _, failed = self.builds
        copied, to_copy, _, _ = self.copies
        return {
            "builds": {"done": done, "expected": expected, "failed": failed},
            "copies": {"done": copied, "expected": to_copy},
            "bytesDownloaded": self.bytes_downloaded,
            "built": list(self.built),
            "substituted": list(self.substituted),
        }


class BuildLog:
    """Feeds Nix's stderr lines into a `BuildState`; `on_change` is told after each event."""

    def __init__(self, state: BuildState | None = None) -> None:
        self.state = state or BuildState()
        self.log_lines: deque[tuple[str, str]] = deque(maxlen=200)  # (build name, line)
        self.log_count = 0  # build-log lines seen in all

    def feed(self, line: str) -> str | None:
        """Read one stderr line; returns the event it was (`start`, `stop`, …) or None."""
        if not line.startswith(PREFIX):
            if line.strip():
                self.state.other_lines.append(strip_ansi(line))
            return None
        try:
            event = json.loads(line[len(PREFIX) :])
        except json.JSONDecodeError:
            self.state.other_lines.append(line)
            return None
        action = event.get("action")
        handler = getattr(self, f"_on_{action}", None)
        if handler is None:
            return None
        handler(event)
        return action

    def feed_all(self, text: str) -> BuildState:
        for line in text.splitlines():
            self.feed(line)
        return self.state

    # -- events -------------------------------------------------------------------------
    def _on_start(self, event: dict[str, Any]) -> None:
        act = Activity(
            id=event["id"],
            type=event.get("type", ACT_UNKNOWN),
            text=event.get("text", ""),
            fields=list(event.get("fields", [])),
            parent=event.get("parent", 0),
        )
        self.state.activities[act.id] = act

    def _on_stop(self, event: dict[str, Any]) -> None:
        act = self.state.activities.get(event["id"])
        if act is None:
            return
        act.stopped = True
        if act.type == ACT_BUILD and act.fields:
            self.state.built.append(act.fields[0])
        elif act.type == ACT_SUBSTITUTE and act.fields:
            self.state.substituted.append(act.fields[0])
        elif act.type == ACT_FILE_TRANSFER and act.expected and act.done < act.expected:
            act.done = act.expected  # the last progress report may not come before the stop

    def _on_result(self, event: dict[str, Any]) -> None:
        act = self.state.activities.get(event.get("id", -1))
        if act is None:
            return
        kind, fields = event.get("type"), event.get("fields", [])
        if kind == RES_PROGRESS and len(fields) >= 4:
            act.done, act.expected, act.running, act.failed = (int(f) for f in fields[:4])
        elif kind == RES_SET_EXPECTED and len(fields) >= 2:
            act.expects[int(fields[0])] = int(fields[1])
        elif kind in (RES_BUILD_LOG_LINE, RES_POST_BUILD_LOG_LINE) and fields:
            text = strip_ansi(str(fields[0]))
            act.log.append(text)
            self.log_lines.append((store_name(act.fields[0]) if act.fields else "", text))
            self.log_count += 1
        elif kind == RES_SET_PHASE and fields:
            act.phase = str(fields[0])

    def _on_msg(self, event: dict[str, Any]) -> None:
        text = strip_ansi(event.get("msg", "")).rstrip()
        level = event.get("level", LVL_ERROR)
        if level == LVL_ERROR:
            self.state.errors.append(text)
        elif level == LVL_WARN:
            self.state.warnings.append(text)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Display:
    """Progress on stderr: one redrawn status line on a terminal, plain event lines otherwise.

    `print_logs` streams every build-log line (like `nix build -L`).
    """

    def __init__(
        self,
        log: BuildLog,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        print_logs: bool = False,
        interval: float = 0.1,
    ) -> None:
        self.log = log
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.print_logs = print_logs
        self.interval = interval
        self._last_draw = 0.0
        self._status_shown = False
        self._announced: set[int] = set()
        self._warned = 0

    def __call__(self, line: str) -> None:
        """Take one stderr line of Nix (the callback for `process.stream`)."""
        lines_before = self.log.log_count
        event = self.log.feed(line)
        if event is None:
            return
        state = self.log.state
        out: list[str] = []
        for warning in state.warnings[self._warned :]:
            out.append(f"warning: {warning.removeprefix('warning: ')}")
        self._warned = len(state.warnings)
        if self.print_logs and self.log.log_count != lines_before:
            name, text = self.log.log_lines[-1]
            out.append(f"{name}> {text}")
        if not self.tty:
            for act in state.activities.values():
                if act.id in self._announced or not act.fields:
                    continue
                if act.type == ACT_BUILD:
                    where = f" on {act.fields[1]}" if len(act.fields) > 1 and act.fields[1] else ""
                    out.append(f"building {store_name(act.fields[0])}{where}")
                elif act.type == ACT_SUBSTITUTE:
                    src = f" from {act.fields[1]}" if len(act.fields) > 1 else ""
                    out.append(f"fetching {store_name(act.fields[0])}{src}")
                else:
                    continue
                self._announced.add(act.id)
        if out:
            self._clear()
            for text in out:
                print(text, file=self.stream)
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= self.interval or out:
                self._draw()
                self._last_draw = now
        self.stream.flush()

    def status_line(self) -> str:
        state = self.log.state
        done, expected, running, failed = state.builds
        parts = []
        if expected or done:
            text = f"built {done}/{max(expected, done)}"
            if failed:
                text += f", {failed} failed"
            current = state.current_build
            if current:
                more = f" +{running - 1}" if running > 1 else ""
                text += f" [{current}{more}]"
            parts.append(text)
        copied, to_copy, _, _ = state.copies
        if to_copy or copied:
            parts.append(f"fetched {copied}/{max(to_copy, copied)}")
        got = state.bytes_downloaded
        if got:
            want = state.bytes_expected
            parts.append(human_bytes(got) + (f"/{human_bytes(want)}" if want > got else ""))
        return ", ".join(parts)

    def _draw(self) -> None:
        text = self.status_line()
        if text:
            self.stream.write("\r\x1b[K" + text)
            self._status_shown = True

    def _clear(self) -> None:
        if self.tty and self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def finish(self) -> None:
        """Replace the status line with a one-line summary."""
        self._clear()
        text = self.status_line()
        if text:
            print(text, file=self.stream)
        self.stream.flush()
