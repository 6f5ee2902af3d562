"""Checkpoints as real users have them (issue 16), against the reference package live: bool keywords
given as 0/1, weights saved as pytorch_model.bin by torch.save, hostile configs refused before
anything is allocated, and a mistyped folder name that the error message calls one."""

import json
import os
from pathlib import Path

import pytest
import torch

from dual_attention.hf import DualAttnTransformerLM_HFHub as RefLM

import dual_attention_cpp.hf as hf
from dual_attention_cpp.language_models import DualAttnTransformerLM

D = 16
DAT = dict(vocab_size=50, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2,
           symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8), dff=None,
           dropout_rate=0.0, activation="gelu", norm_first=True, max_block_size=12)
IDX = torch.tensor([[1, 5, 7, 3, 0, 49], [2, 2, 8, 9, 10, 11]])


def reference(**overrides):
    torch.manual_seed(0)
    model = RefLM(**{**DAT, **overrides})
    model.eval()
    return model


def assert_same_logits(ours, ref):
    with torch.no_grad():
        want, _ = ref(IDX)
        got, _ = ours(IDX)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_config_with_norm_first_1_loads_as_the_reference_loads_it(tmp_path):
    ref = reference(norm_first=1)  # the reference's mixin writes the 1 as given
    ref.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["norm_first"] == 1
    assert_same_logits(DualAttnTransformerLM.from_pretrained(tmp_path), ref)
    ref0 = reference(norm_first=0)
    ref0.save_pretrained(tmp_path / "zero")
    assert_same_logits(DualAttnTransformerLM.from_pretrained(tmp_path / "zero"), ref0)


def test_python_constructors_take_0_and_1_for_bools_and_nothing_else():
    ours = DualAttnTransformerLM(**{**DAT, "norm_first": 0, "ra_kwargs": {"symmetric_rels": 1}})
    ours.load_state_dict(reference(norm_first=False, ra_kwargs={"symmetric_rels": True}).state_dict())
    assert_same_logits(ours, reference(norm_first=False, ra_kwargs={"symmetric_rels": True}))
    for bad in (2, -1, "yes", 1.0, None):
        with pytest.raises((ValueError, RuntimeError, TypeError), match="norm_first"):
            DualAttnTransformerLM(**{**DAT, "norm_first": bad})


def test_pytorch_model_bin_loads_when_there_is_no_model_safetensors(tmp_path):
    ref = reference(activation="swiglu", pos_enc_type="RoPE")
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    ours = DualAttnTransformerLM.from_pretrained(tmp_path)
    assert_same_logits(ours, ref)
    assert not ours.training


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dual_attention_pwned_py",))


def test_a_pickle_with_code_in_it_is_refused_and_nothing_runs(tmp_path):
    reference().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2), "x": _RunsACommand()}, tmp_path / "pytorch_model.bin")
    with pytest.raises((ValueError, RuntimeError), match="pytorch_model.bin"):
        DualAttnTransformerLM.from_pretrained(tmp_path)
    assert not Path("/tmp/dual_attention_pwned_py").exists()


def write_config(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**DAT, **overrides}))
    return folder


@pytest.mark.parametrize("overrides", [
    dict(d_model=10**9), dict(n_layers=10**6), dict(vocab_size=10**12),
    dict(symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=10**12)),
    dict(ra_kwargs=dict(n_relations=10**9)), dict(dff=10**10),
])
def test_absurd_configs_are_refused_before_anything_is_allocated(tmp_path, overrides):
    folder = write_config(tmp_path / "m", **overrides)
    with pytest.raises((ValueError, RuntimeError), match="above max_parameter_bytes .*nothing was allocated"):
        DualAttnTransformerLM.from_pretrained(folder)


@pytest.mark.parametrize("overrides, message", [
    (dict(n_heads_sa=0, n_heads_ra=0), "n_heads"),
    (dict(max_block_size=-1), "max_block_size must be positive, got -1"),
    (dict(dropout_rate=-0.5), r"dropout_rate must be in \[0, 1\]"),
    (dict(ra_kwargs=dict(rel_proj_dim=5)), r"rel_proj_dim \(5\)"),
    (dict(ra_kwargs=5), "expected a dict or None"),
    (dict(sa_kwargs=dict(n_kv_heads="2")), "expected an int"),
])
def test_invalid_configs_are_refused_with_their_name(tmp_path, overrides, message):
    folder = write_config(tmp_path / "m", **overrides)
    with pytest.raises((ValueError, RuntimeError), match=message):
        DualAttnTransformerLM.from_pretrained(folder)


def test_nan_dropout_is_refused_by_the_constructor():
    with pytest.raises((ValueError, RuntimeError), match="dropout_rate"):
        DualAttnTransformerLM(**{**DAT, "dropout_rate": float("nan")})


def test_max_parameter_bytes_is_the_callers_limit(tmp_path):
    folder = tmp_path / "m"
    reference().save_pretrained(folder)
    with pytest.raises((ValueError, RuntimeError), match="above max_parameter_bytes 1000"):
        DualAttnTransformerLM.from_pretrained(folder, max_parameter_bytes=1000)
    DualAttnTransformerLM.from_pretrained(folder, max_parameter_bytes=10**8)


def test_a_mistyped_folder_name_says_no_such_folder_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "my-model").mkdir()
    with pytest.raises(hf.LocalEntryNotFoundError) as info:
        DualAttnTransformerLM.from_pretrained("my-modle")
    assert "nor is 'my-modle' a local folder" in str(info.value)
    assert str(tmp_path) in str(info.value)
