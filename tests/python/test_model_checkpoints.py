"""Checkpoints of the seq2seq and vision models written by our C++ load in the reference.

For every case of tests/fixtures/models/, tests/helpers/model_roundtrip (built into <build>/tests/;
the build directory is $DUAL_ATTENTION_BUILD_DIR, default <repo>/build) builds the model in C++ with
its own random initialisation and writes config.json (every keyword), model.safetensors and its
outputs for the case's inputs. The reference (dual-attention 0.0.7) then builds the class from that
config.json, loads the weights with safetensors.torch.load_model(strict=True) and must give the
same logits and loss within 1e-4 (float32) / 1e-10 (float64) of the largest |logit|.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model

from dual_attention.seq2seq_models import Seq2SeqDualAttnTransformer, Seq2SeqTransformer
from dual_attention.vision_models import VisionDualAttnTransformer, VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
TOOL = Path(os.environ.get("DUAL_ATTENTION_BUILD_DIR", ROOT / "build")) / "tests" / "model_roundtrip"
CLASSES = {c.__name__: c for c in (Seq2SeqTransformer, Seq2SeqDualAttnTransformer,
                                   VisionTransformer, VisionDualAttnTransformer)}
CASES = sorted(p.name for p in MODELS.iterdir() if p.is_dir())
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def test_there_are_cases_of_every_class():
    classes = {json.loads((MODELS / c / "meta.json").read_text())["model"] for c in CASES}
    assert classes == set(CLASSES)


def reference_outputs(model, inputs):
    with torch.no_grad():
        if "y" in inputs:
            logits, loss = model(inputs["x"], inputs["y"], inputs["targets"])
            logits_last, no_loss = model(inputs["x"], inputs["y"])
            assert no_loss is None
            return dict(logits=logits, loss=loss, logits_last=logits_last)
        out = dict(logits=model(inputs["x"]))
        if "x_small" in inputs:
            out["logits_small"] = model(inputs["x_small"])
        return out


def assert_close(got, want, dtype_name):
    rel = 1e-10 if dtype_name == "float64" else 1e-4
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert (g - w).abs().max().item() <= rel * w.abs().max().item(), name


@pytest.mark.parametrize("case", CASES)
def test_fixture_is_the_installed_references_output(case):
    """The committed fixture still matches the installed reference (portable: within tolerance)."""
    fixture = MODELS / case
    meta = json.loads((fixture / "meta.json").read_text())
    config = json.loads((fixture / "config.json").read_text())
    model = CLASSES[meta["model"]](**config).to(DTYPES[meta["dtype"]])
    load_model(model, str(fixture / "model.safetensors"), strict=True)
    model.eval()
    assert list(model.state_dict()) == meta["state_dict_keys"]
    stored = load_file(str(fixture / "reference.safetensors"))
    expected = {k: v for k, v in stored.items() if k.startswith(("logits", "loss"))}
    assert_close(reference_outputs(model, stored), expected, meta["dtype"])


@pytest.mark.parametrize("case", CASES)
def test_cpp_checkpoint_loads_in_the_reference(case, tmp_path):
    assert TOOL.exists(), f"{TOOL} is not built (run scripts/setup.sh)"
    fixture = MODELS / case
    done = subprocess.run([str(TOOL), str(fixture), str(tmp_path), "7"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr

    meta = json.loads((fixture / "meta.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    torch.manual_seed(0)
    model = CLASSES[meta["model"]](**config).to(DTYPES[meta["dtype"]])
    # The C++ file has the reference's tensor names and aliases: it loads strictly.
    missing, unexpected = load_model(model, str(tmp_path / "model.safetensors"), strict=True)
    assert not missing and not unexpected
    model.eval()
    # It is not the fixture's checkpoint: the C++ initialisation differs from the reference's.
    reference_weights = load_file(str(fixture / "model.safetensors"))
    ours_weights = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(ours_weights) == sorted(reference_weights)
    assert not any(torch.equal(ours_weights[k], reference_weights[k])
                   for k in ours_weights if not k.endswith(".pe"))

    inputs = load_file(str(fixture / "reference.safetensors"))
    cpp = load_file(str(tmp_path / "outputs.safetensors"))
    assert_close(cpp, reference_outputs(model, inputs), meta["dtype"])
