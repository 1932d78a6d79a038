"""`ruff check` is part of the test command: the whole tree must lint clean."""

import shutil
import subprocess
import sys
from pathlib import Path

from _paths import REPO


def test_ruff_check_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    result = subprocess.run([ruff, "check", "--no-cache", str(REPO)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
