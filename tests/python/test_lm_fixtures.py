"""The committed language-model checkpoint fixtures (tests/fixtures/lm/) are current: the generator,
run again with the reference package, rebuilds the same files (within the --portable tolerances of
tests/fixtures/make_lm_fixtures.py, since this may run on a CPU other than the one that wrote them),
and the files on disk, loaded by the reference, reproduce their stored logits and loss."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lm_fixtures_are_reproduced_by_their_generator():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fixtures" / "make_lm_fixtures.py"), "--check",
         "--portable"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
