"""The committed parity fixtures are current.

Each one, rebuilt from its own metadata with the reference package, reproduces its stored outputs
and gradients (within the --portable tolerances of tests/fixtures/make_fixtures.py, since this may
run on a CPU other than the one that wrote them), and the set of files and MANIFEST.json match the
generator's case list."""

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "make_fixtures", ROOT / "tests" / "fixtures" / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)

FIXTURES = {
    make_fixtures.fixture_name(c, dtype): (c, dtype, has_grads)
    for c, dtype, has_grads in make_fixtures.all_fixtures()
}


def test_reference_version_is_the_one_the_fixtures_came_from():
    assert importlib.metadata.version("dual-attention") == make_fixtures.REFERENCE_VERSION


def test_fixture_files_and_manifest_match_the_case_list():
    on_disk = {p.stem for p in make_fixtures.OUT_DIR.glob("*.safetensors")}
    assert on_disk == set(FIXTURES)
    entries = {name: make_fixtures.manifest_entry(*fixture) for name, fixture in FIXTURES.items()}
    assert make_fixtures.MANIFEST.read_bytes() == make_fixtures.manifest_bytes(entries)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_reproduces_reference_outputs_and_gradients(name):
    make_fixtures.check_one(make_fixtures.OUT_DIR / f"{name}.safetensors", None, exact=False)
