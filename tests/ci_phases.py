"""The phase table of a test run: how long each set-up step of hack/test.sh and each test module took.

hack/test.sh records its set-up steps in the file that ``REASONOPS_PHASES`` names, one line per step (name,
start, end; tab-separated, epoch seconds; hack/phases.sh), and hack/build-tools.sh and hack/images.sh the parts
of theirs (``tools/etcd``, ``images/workload-cpu``: shown under their step, when they took a second or more). :class:`PhaseRecorder` (registered by
conftest.py only when that variable is set) adds each test module's wall time, prints the table at the end
of the run and writes it next to that file (``ci-phases.txt``): a regression in any phase shows in every
CI log. A module's time runs from its first test's set-up to its last test's teardown, so a session fixture
(a control plane, the real node) counts in the first module that uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

SETUP = "set-up"  # the line of hack/test.sh's whole set-up (its steps ran side by side within it)


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # epoch seconds
    end: float
    failed: int = 0  # a module's failed tests
    worker: str = ""  # the pytest-xdist worker that ran a module (gw0, gw1; empty in a run of one process)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_phases(text: str) -> list[Phase]:
    """The phases of hack/test.sh's file, in the order written (a step's line when it ended)."""
    phases = []
    for line in text.splitlines():
        if line.strip():
            name, start, end = line.split("\t")
            phases.append(Phase(name, float(start), float(end)))
    return phases


def phase_table(setup: list[Phase], pytest_run: Phase, modules: list[Phase]) -> str:
    """The table: the set-up steps by start, each followed by its parts of a second or more, then pytest and its
    modules in run order, each with its start (seconds from the first phase) and wall time, and the total."""
    origin = min(p.start for p in [*setup, pytest_run])
    end = max(p.end for p in [*setup, pytest_run])
    whole = [p for p in setup if p.name == SETUP]
    steps = [p for p in setup if p.name != SETUP and "/" not in p.name]
    parts = [p for p in setup if "/" in p.name and p.seconds >= 1]
    step_of = lambda part: part.name.split("/")[0]  # noqa: E731
    unowned = [p for p in parts if step_of(p) not in {s.name for s in steps}]  # its step was not timed
    indent = "  " if whole else ""
    rows = [(p.name, p) for p in whole]
    for step in sorted(steps + unowned, key=lambda p: p.start):
        rows.append((indent + step.name, step))
        rows += [(indent + "  " + p.name, p) for p in sorted(parts, key=lambda p: p.start) if step_of(p) == step.name]
    rows += [("pytest", pytest_run)] + [("  " + p.name, p) for p in modules]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'phase':<{width}}  {'start s':>8}  {'wall s':>8}  note"]
    for label, p in rows:
        note = " ".join(filter(None, [p.worker, f"{p.failed} failed" if p.failed else ""]))
        lines.append(f"{label:<{width}}  {p.start - origin:>8.0f}  {p.seconds:>8.0f}  {note}".rstrip())
    lines.append(f"{'total':<{width}}  {0:>8.0f}  {end - origin:>8.0f}")
    return "\n".join(lines) + "\n"


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


class PhaseRecorder:
    """pytest plugin: each module's wall time, and the table at the end (see the module docstring)."""

    def __init__(self, phases_file: Path) -> None:
        self.phases_file = phases_file
        self.started = time.time()
        self.spans: dict[str, list[float]] = {}  # module -> [its first test's start, its last test's end]
        self.failed: dict[str, set[str]] = {}  # module -> its failed tests
        self.workers: dict[str, str] = {}  # module -> the xdist worker that ran it

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        now = time.time()
        self.spans.setdefault(module_of(nodeid), [now, now])

    def pytest_runtest_logfinish(self, nodeid: str, location) -> None:
        self.spans[module_of(nodeid)][1] = time.time()

    def pytest_runtest_logreport(self, report) -> None:
        worker = getattr(report, "node", None)  # under pytest-xdist, the controller's handle on the worker
        if worker is not None:
            self.workers[module_of(report.nodeid)] = worker.workerinput["workerid"]
        if report.failed:
            self.failed.setdefault(module_of(report.nodeid), set()).add(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        setup = read_phases(self.phases_file.read_text()) if self.phases_file.exists() else []
        modules = [Phase(name, start, end, len(self.failed.get(name, ())), self.workers.get(name, ""))
                   for name, (start, end) in self.spans.items()]
        table = phase_table(setup, Phase("pytest", self.started, time.time()), modules)
        self.phases_file.with_suffix(".txt").write_text(table)
        terminalreporter.write_sep("=", "phases (wall time)")
        terminalreporter.write(table)
