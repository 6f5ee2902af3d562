"""Files written by the C++ safetensors writer read back in Python's safetensors, and the reverse.

The C++ side is tests/helpers/safetensors_roundtrip (built into <build>/tests/); the build directory
is $DUAL_ATTENTION_BUILD_DIR, default <repo>/build.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "io"))
from make_fixtures import TiedModel  # noqa: E402

TOOL = Path(os.environ.get("DUAL_ATTENTION_BUILD_DIR", ROOT / "build")) / "tests" / "safetensors_roundtrip"


def run_tool(*args):
    assert TOOL.exists(), f"{TOOL} is not built (run scripts/setup.sh)"
    done = subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def metadata_of(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def assert_bit_equal(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        raw = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
        assert torch.equal(raw(a[name]), raw(b[name])), name


def every_dtype():
    g = torch.Generator().manual_seed(3)
    tensors = {}
    for dtype in [torch.float64, torch.float32, torch.float16, torch.bfloat16]:
        t = torch.randn(4, 3, generator=g).to(dtype)
        t.view(-1)[:4] = torch.tensor([math.nan, math.inf, -math.inf, -0.0]).to(dtype)
        tensors[str(dtype)] = t
    for dtype in [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]:
        info = torch.iinfo(dtype)
        tensors[str(dtype)] = torch.randint(info.min, info.max, (5,), generator=g, dtype=dtype)
    tensors["bool"] = torch.tensor([True, False, False, True])
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.bfloat16)
    tensors["empty"] = torch.zeros(3, 0, dtype=torch.int32)
    return tensors


def test_python_file_rewritten_by_cpp_is_identical(tmp_path):
    tensors = every_dtype()
    theirs, ours = tmp_path / "py.safetensors", tmp_path / "cpp.safetensors"
    save_file(tensors, theirs, metadata={"note": "written by Python \u00e9\u5b57"})
    run_tool("copy", theirs, ours)
    assert_bit_equal(load_file(ours), tensors)
    assert metadata_of(ours) == {"note": "written by Python \u00e9\u5b57"}
    # One metadata entry, so Python's hash-map order cannot differ from ours: same bytes.
    assert ours.read_bytes() == theirs.read_bytes()


def test_cpp_file_without_metadata_has_none(tmp_path):
    theirs, ours = tmp_path / "py.safetensors", tmp_path / "cpp.safetensors"
    save_file({"x": torch.arange(3)}, theirs)
    run_tool("copy", theirs, ours)
    assert metadata_of(ours) is None
    assert ours.read_bytes() == theirs.read_bytes()


def fill_tied(model):
    """The twin of fill_tied() in tests/helpers/safetensors_roundtrip.cpp."""
    done = set()
    with torch.no_grad():
        for i, t in enumerate(model.state_dict().values()):
            if t.data_ptr() in done:
                continue
            done.add(t.data_ptr())
            if t.is_floating_point():
                t.copy_(torch.arange(t.numel(), dtype=torch.float64).reshape(t.shape) / 4 - i)
            else:
                t.fill_(i)
    return model


def test_cpp_save_module_matches_python_save_model(tmp_path):
    ours, theirs = tmp_path / "cpp.safetensors", tmp_path / "py.safetensors"
    run_tool("write-tied", ours)
    save_model(fill_tied(TiedModel()), str(theirs), metadata={"format": "pt"})

    assert metadata_of(ours) == metadata_of(theirs)
    assert metadata_of(ours)["token_embedder.weight"] == "final_out.weight"
    assert_bit_equal(load_file(ours), load_file(theirs))

    model = TiedModel()
    missing, unexpected = load_model(model, ours)  # strict
    assert not missing and not unexpected
    assert model.final_out.weight is model.token_embedder.weight
    for name, t in fill_tied(TiedModel()).state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name


def test_python_save_model_loads_into_the_cpp_module(tmp_path):
    theirs, ours = tmp_path / "py.safetensors", tmp_path / "cpp.safetensors"
    torch.manual_seed(5)
    model = TiedModel()
    with torch.no_grad():
        model.norm.running_var.uniform_(1, 2)
        model.norm.num_batches_tracked.fill_(4)
    save_model(model, str(theirs), metadata={"format": "pt"})
    run_tool("module-copy", theirs, ours)
    assert metadata_of(ours) == metadata_of(theirs)
    assert_bit_equal(load_file(ours), load_file(theirs))


def test_cpp_reports_a_malformed_python_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"x": torch.ones(10)}, path)
    path.write_bytes(path.read_bytes()[:-4])
    done = subprocess.run([str(TOOL), "copy", str(path), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "are out of range: the data section has 36 bytes" in done.stderr
    assert str(path) in done.stderr
