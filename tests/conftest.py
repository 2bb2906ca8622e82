import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The kernel runs under Triton's CPU interpreter unless a GPU is present; the
# variable must be set before triton is first imported.
try:
    import torch

    HAS_GPU = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_GPU = False
if not HAS_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if HAS_GPU else "cpu"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TEST_CONFIG = REPO / ".test" / "config.yaml"


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900, **popen):
    """Run the real `snakemake` command on this repo's workflow inside `workdir`."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    full_env = {**os.environ, "W8A8_TUNER_LOCK_DIR": str(workdir / "locks"), **(env or {})}
    full_env.pop("TRITON_INTERPRET", None)  # the workflow decides per backend
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, **popen)


@pytest.fixture
def workdir(tmp_path):
    """A deployment folder with the CI config as config/config.yaml."""
    (tmp_path / "config").mkdir()
    shutil.copy(TEST_CONFIG, tmp_path / "config" / "config.yaml")
    return tmp_path
