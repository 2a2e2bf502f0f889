"""The container images, as far as a machine without a Docker engine can check them.

Static: every version a Dockerfile installs is pinned and documented, every extra it asks for exists,
every image runs as uid 1000. Built: the operator image's install, reproduced without Docker — the
build context its .dockerignore lets through, `pip wheel` of it, and that wheel alone in a fresh
virtual environment (what the image's final stage does) — runs the operator's code without any of
the ML stack, and generates the same CRDs as the repository holds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
README = (IMAGES / "README.md").read_text()
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
HEAVY = ("torch", "transformers", "deepspeed", "datasets", "vllm", "peft", "numpy", "pyarrow", "mlflow", "mlflow-skinny", "tensorboard", "wandb")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_there_are_the_five_images():
    assert [d.name for d in DOCKERFILES] == [
        "curate.Dockerfile", "eval.Dockerfile", "operator.Dockerfile", "train.Dockerfile", "workload-cpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.stem)
def test_versions_are_pinned_and_documented(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.partition("=")[::2] for word, a in steps if word == "ARG")
    for name, default in args.items():
        if name.endswith("_VERSION"):
            assert re.fullmatch(r"\d+(\.\d+)+(\.post\d+)?", default), f"{dockerfile.name}: ARG {name} must default to an exact version"
        assert f"`{name}`" in README, f"images/README.md does not document {dockerfile.name}'s build argument {name}"
    for word, rest in steps:
        if word == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)  # ARGs made of ARGs
            if image in {a.split()[-1] for w, a in steps if w == "FROM" and " AS " in a.upper()}:
                continue  # an earlier stage
            assert ":" in image and not image.endswith(":latest"), f"{dockerfile.name}: base {image} is not pinned"
            assert re.search(r":v?\d", image), f"{dockerfile.name}: base {image} needs a version tag"
        if word == "RUN" and "pip install" in rest:
            for spec in re.findall(r'"([A-Za-z0-9_.-]+)==\$\{(\w+)\}"', rest):
                assert spec[1] in args, f"{dockerfile.name}: {spec[0]} pinned by an undefined ARG {spec[1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.stem)
def test_runs_as_uid_1000_from_a_wheel_with_existing_extras(dockerfile):
    steps = instructions(dockerfile)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] == "1000:1000", f"{dockerfile.name} must end as USER 1000:1000"
    text = dockerfile.read_text()
    assert "pip wheel --no-deps --wheel-dir /dist ." in text, "the final image gets the package as a wheel"
    for extras in re.findall(r"reasonops-\*\.whl\)\[([a-z,]+)\]", text):
        assert set(extras.split(",")) <= EXTRAS, f"{dockerfile.name} asks for extras {extras}; pyproject has {sorted(EXTRAS)}"
    wants = {"operator": set(), "curate": {"curate", "gpu", "tracking"}, "train": {"train", "tracking"}, "eval": {"eval", "tracking"},
             "workload-cpu": {"curate", "train", "eval", "tracking"}}[dockerfile.stem]
    got = {e for group in re.findall(r"reasonops-\*\.whl\)\[([a-z,]+)\]", text) for e in group.split(",")}
    assert got == wants, f"{dockerfile.name} installs extras {got}, expected {wants}"
    # The build context is only what `pip wheel .` needs.
    ignore = (IMAGES / f"{dockerfile.name}.dockerignore").read_text()
    assert allowed_by(ignore, "operator/reasonops/cli.py") and allowed_by(ignore, "pyproject.toml")
    assert not allowed_by(ignore, "tests/conftest.py") and not allowed_by(ignore, ".venv/bin/python")
    assert not allowed_by(ignore, "operator/reasonops/__pycache__/cli.cpython-312.pyc")


def allowed_by(dockerignore: str, path: str) -> bool:
    """Whether Docker sends `path` (relative to the context) with this .dockerignore: the last
    matching pattern decides, `!` re-includes, a pattern matching a directory covers what is in it.
    (The subset of the syntax these files use: `*`, `**/`, plain names and `!`.)"""
    patterns = [p.strip() for p in dockerignore.splitlines() if p.strip() and not p.startswith("#")]
    assert all(re.fullmatch(r"!?[\w*./-]+", p) for p in patterns), patterns
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        rx = _glob_regex(pattern)
        if any(re.fullmatch(rx, prefix) for prefix in prefixes):
            included = negate
    return included


def _glob_regex(pattern: str) -> str:
    """Docker's glob: `*` stays within one path segment, `**/` spans any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        else:
            out, i = out + ("[^/]*" if pattern[i] == "*" else re.escape(pattern[i])), i + 1
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_operator_image_install_is_light_and_complete(tmp_path):
    """The operator image's two stages, without Docker: the filtered context → a wheel → a fresh
    environment with that wheel only (and its plain dependencies from the index)."""
    ignore = (IMAGES / "operator.Dockerfile.dockerignore").read_text()
    context = tmp_path / "context"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if allowed_by(ignore, rel) and (ROOT / rel).is_file():
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, context / rel)
    assert not (context / "tests").exists() and (context / "operator" / "reasonops" / "cli.py").exists()
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(context)], check=True, timeout=600)
    (wheel,) = dist.glob("reasonops-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in installed.split()}
    assert not names & set(HEAVY), f"the operator image would carry {sorted(names & set(HEAVY))}"
    assert {"kopf", "kubernetes", "pydantic", "prometheus-client"} <= names

    # The operator's modules import, the bundled data is in the wheel, and the API generates the CRDs.
    probe = (
        "import importlib.util, reasonops.controller.handlers, reasonops.cli\n"
        "from importlib import resources\n"
        "assert resources.files('reasonops').joinpath('data', 'demo.yaml').is_file()\n"
        f"assert not any(importlib.util.find_spec(m) for m in {HEAVY!r})\n"
    )
    subprocess.run([str(python), "-c", probe], check=True, timeout=120)
    help_text = subprocess.run([str(venv / "bin" / "reasonops"), "operator", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--liveness" in help_text and "--namespace" in help_text
    out = tmp_path / "crds"
    subprocess.run([str(venv / "bin" / "reasonops"), "crds", "--output", str(out)], check=True, timeout=120)
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        assert (out / crd.name).read_text() == crd.read_text(), f"{crd.name} differs when generated by the image's install"
