"""What the sandbox tests share: the bubblewrap mode (run, never skipped silently) and a machine without it."""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

# CI installs bubblewrap (hack/test.sh), so the bubblewrap tests run there and fail, naming the fix, where it does
# not work. Only an explicit REASONOPS_TEST_SKIP_BWRAP=1 skips them, and says so.
SKIP_BWRAP = os.environ.get("REASONOPS_TEST_SKIP_BWRAP") == "1"
BWRAP_MODES = [pytest.param("bwrap", marks=pytest.mark.skipif(SKIP_BWRAP, reason="REASONOPS_TEST_SKIP_BWRAP=1"))]

# A PATH as on a machine without bubblewrap: only this interpreter's directory (the programs' interpreter and the
# helpers the sandbox runs are named by absolute path).
PATH_WITHOUT_BWRAP = os.path.dirname(sys.executable)
assert shutil.which("bwrap", path=PATH_WITHOUT_BWRAP) is None, PATH_WITHOUT_BWRAP


@contextmanager
def without_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside: this process finds no bubblewrap, as on a machine without it."""
    with monkeypatch.context() as patch:
        patch.setenv("PATH", PATH_WITHOUT_BWRAP)
        yield
