"""The phase table that every hack/test.sh run (CI) ends with: set-up steps and test modules, timed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci_phases import Phase, phase_table, read_phases

pytest_plugins = ["pytester"]


def test_the_table_lists_the_set_up_steps_by_start_with_their_parts_then_the_modules_in_run_order():
    setup = read_phases("tools/etcd\t100\t250\ntools/helm\t250\t250.5\ntools/kubernetes\t250.5\t700\ntools\t100\t700\n"
                        "venv\t100.4\t300\napt\t101\t160\nimages/base\t160\t300\nimages\t160\t650\n"
                        "set-up\t100\t700.2\n")
    modules = [Phase("tests/test_b.py", 705, 725), Phase("tests/test_a.py", 725, 1000, 2)]
    table = phase_table(setup, Phase("pytest", 702, 1001), modules)
    assert table.splitlines() == [
        "phase                  start s    wall s  note",
        "set-up                       0       600",
        "  tools                      0       600",
        "    tools/etcd               0       150",
        "    tools/kubernetes       150       450",
        "  venv                       0       200",
        "  apt                        1        59",
        "  images                    60       490",
        "    images/base             60       140",
        "pytest                     602       299",
        "  tests/test_b.py          605        20",
        "  tests/test_a.py          625       275  2 failed",
        "total                        0       901",
    ]


def test_modules_run_side_by_side_show_their_worker():
    """Under pytest-xdist (hack/test.sh), two modules overlap: each row says which worker ran it."""
    modules = [Phase("tests/test_slow.py", 10, 100, worker="gw0"), Phase("tests/test_fast.py", 11, 40, 1, worker="gw1")]
    rows = phase_table([], Phase("pytest", 10, 101), modules).splitlines()
    assert [row.split() for row in rows[2:4]] == [["tests/test_slow.py", "0", "90", "gw0"],
                                                  ["tests/test_fast.py", "1", "29", "gw1", "1", "failed"]]


def test_a_run_on_two_workers_names_each_modules_worker(pytester: pytest.Pytester, monkeypatch):
    phases = pytester.path / "ci-phases.tsv"
    monkeypatch.setenv("REASONOPS_PHASES", str(phases))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    pytester.makeconftest("""
import os
from pathlib import Path
from ci_phases import PhaseRecorder

def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(PhaseRecorder(Path(os.environ["REASONOPS_PHASES"])), "reasonops-phases")
""")
    pytester.makepyfile(test_one="def test_ok():\n    pass\n", test_two="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=2)
    rows = [line.split() for line in (pytester.path / "ci-phases.txt").read_text().splitlines() if "test_" in line]
    assert sorted(row[0] for row in rows) == ["test_one.py", "test_two.py"]
    assert {row[3] for row in rows} <= {"gw0", "gw1"} and all(len(row) == 4 for row in rows), rows


def test_parts_built_during_the_tests_show_without_their_step():
    """hack/cluster.sh builds what the set-up did not (a run without REASONOPS_PREPARE_REAL_NODE): its parts."""
    table = phase_table(read_phases("venv\t10\t20\ntools/coredns\t40\t90\n"), Phase("pytest", 20, 100), [])
    assert [line.split()[:3] for line in table.splitlines()[1:3]] == [["venv", "0", "10"], ["tools/coredns", "30", "50"]]


def test_a_run_with_the_phases_file_prints_and_writes_the_table(pytester: pytest.Pytester, monkeypatch):
    phases = pytester.path / "out" / "ci-phases.tsv"
    phases.parent.mkdir()
    phases.write_text("venv\t1.0\t2.0\nset-up\t1.0\t2.5\n")
    monkeypatch.setenv("REASONOPS_PHASES", str(phases))
    pytester.makeconftest("""
import os
from pathlib import Path
from ci_phases import PhaseRecorder

def pytest_configure(config):
    config.pluginmanager.register(PhaseRecorder(Path(os.environ["REASONOPS_PHASES"])), "reasonops-phases")
""")
    pytester.makepyfile(test_one="def test_ok():\n    pass\n", test_two="def test_bad():\n    assert False\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*phases (wall time)*", "set-up *", "  venv *", "pytest *", "  test_one.py *",
                                 "  test_two.py * 1 failed", "total *"])
    written = (pytester.path / "out" / "ci-phases.txt").read_text()
    assert written.startswith("phase ") and "  test_two.py" in written


def test_a_run_without_room_on_disk_stops_before_it_starts_naming_what_to_free(tmp_path):
    """A full disk fails a run far from the cause ("no space left on device" in a Docker build, stop 29); the test
    command checks first. Nothing is written: not even the phases file of a run that may be going on."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    phases = root / "out" / "ci-phases.tsv"
    before = phases.stat().st_mtime_ns if phases.exists() else None
    env = {**os.environ, "REASONOPS_MIN_FREE_GB": "1000000000", "PYTHON": "false"}
    done = subprocess.run(["bash", str(root / "hack" / "test.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "GB free where" in done.stderr and "a run needs about 1000000000 GB" in done.stderr
    assert "docker system prune" in done.stderr and "REASONOPS_MIN_FREE_GB" in done.stderr
    assert "started" not in done.stderr  # no set-up step ran
    assert (phases.stat().st_mtime_ns if phases.exists() else None) == before
