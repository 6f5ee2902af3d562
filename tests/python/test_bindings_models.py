"""The model classes: parity with the reference (outputs, loss, gradients, greedy generation),
checkpoints both ways, the reference README's examples with the import changed, and a small LM that
trains from Python with torch.optim.AdamW."""

import copy
import importlib.metadata
import inspect
import re

import pytest
import torch

import dual_attention_cpp as dac
from bindings_support import assert_close
from dual_attention import hf as ref_hf
from dual_attention import language_models as ref_lm
from dual_attention import seq2seq_models as ref_s2s
from dual_attention import vision_models as ref_vision

V, D, T = 40, 16, 10
SYMBOLIC = dict(symbol_retrieval="symbolic_attention",
                symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8))
LM_BASE = dict(vocab_size=V, d_model=D, n_layers=2, dff=32, dropout_rate=0.0, activation="swiglu",
               norm_first=True, max_block_size=T)

CONFIGS = {
    "dat_lm_rope_symbolic": ("DualAttnTransformerLM", ref_lm.DualAttnTransformerLM,
                             dict(LM_BASE, n_heads_sa=2, n_heads_ra=2, pos_enc_type="RoPE",
                                  ra_kwargs=dict(n_kv_heads=1), **SYMBOLIC)),
    "dat_lm_posemb_per_layer": ("DualAttnTransformerLM", ref_lm.DualAttnTransformerLM,
                                dict(LM_BASE, n_heads_sa=2, n_heads_ra=2, norm_type="rmsnorm",
                                     symbol_retriever_config=dict(shared_symbol_retriever=False,
                                                                  weight_tie_symbol_library=True),
                                     ra_kwargs=dict(rel_activation="tanh", symmetric_rels=True),
                                     share_attn_params=True, **SYMBOLIC)),
    "dat_lm_position_relative": ("DualAttnTransformerLM", ref_lm.DualAttnTransformerLM,
                                 dict(LM_BASE, n_heads_sa=2, n_heads_ra=2, activation="gelu",
                                      symbol_retrieval="position_relative",
                                      symbol_retrieval_kwargs=dict(symbol_dim=D, max_rel_pos=T),
                                      ra_kwargs=dict(use_relative_positional_symbols=True))),
    "t_lm": ("TransformerLM", ref_lm.TransformerLM, dict(LM_BASE, n_heads=4, pos_enc_type="RoPE")),
    "s2s": ("Seq2SeqTransformer", ref_s2s.Seq2SeqTransformer,
            dict(input_spec=dict(type="token", vocab_size=V), output_spec=dict(type="token", vocab_size=V),
                 d_model=D, out_dim=V, n_layers_enc=2, n_layers_dec=1,
                 encoder_kwargs=dict(n_heads=4, dff=32, dropout_rate=0.0, activation="relu", norm_first=True),
                 decoder_kwargs=dict(n_heads=4, n_heads_cross=4, dff=32, dropout_rate=0.0,
                                     activation="relu", norm_first=True, causal=True),
                 in_block_size=T, out_block_size=T)),
    "s2s_dat": ("Seq2SeqDualAttnTransformer", ref_s2s.Seq2SeqDualAttnTransformer,
                dict(input_spec=dict(type="token", vocab_size=V), output_spec=dict(type="token", vocab_size=V),
                     d_model=D, out_dim=V, n_layers_enc=1, n_layers_dec=1, **SYMBOLIC,
                     encoder_kwargs=dict(n_heads_sa=2, n_heads_ra=2, dff=32, dropout_rate=0.0,
                                         activation="relu", norm_first=True),
                     decoder_kwargs=dict(n_heads_sa=2, n_heads_ra=2, n_heads_cross=4, dff=32,
                                         dropout_rate=0.0, activation="relu", norm_first=True),
                     in_block_size=T, out_block_size=T)),
    "vit": ("VisionTransformer", ref_vision.VisionTransformer,
            dict(image_shape=(3, 8, 8), patch_size=(4, 4), num_classes=5, d_model=D, n_layers=2,
                 n_heads=4, dff=32, dropout_rate=0.0, activation="gelu", norm_first=True, pool="mean")),
    "vit_dat": ("VisionDualAttnTransformer", ref_vision.VisionDualAttnTransformer,
                dict(image_shape=(3, 8, 8), patch_size=(4, 4), num_classes=5, d_model=D, n_layers=2,
                     n_heads_sa=2, n_heads_ra=2, dff=32, dropout_rate=0.0, activation="swiglu",
                     norm_first=True, symbol_retrieval="position_relative",
                     symbol_retrieval_kwargs=dict(symbol_dim=D, max_rel_pos=5),
                     ra_kwargs=dict(symmetric_rels=True, use_relative_positional_symbols=True))),
}


def build(config, seed=0):
    name, ref_cls, kwargs = CONFIGS[config]
    torch.manual_seed(seed)
    ref = ref_cls(**kwargs).eval()
    mine = getattr(dac, name)(**kwargs).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    return ref, mine


def inputs(config):
    g = torch.Generator().manual_seed(7)
    if config.startswith("vit"):
        return (torch.randn(2, 3, 8, 8, generator=g),)
    x = torch.randint(0, V, (2, T), generator=g)
    y = torch.randint(0, V, (2, T), generator=g)
    if config.startswith("s2s"):
        return x, y[:, :-1], y[:, 1:].contiguous()  # the reference's loss views the targets
    return x, y


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_model_matches_the_reference(config):
    name, ref_cls, _ = CONFIGS[config]
    assert [(p.name, p.default) for p in inspect.signature(getattr(dac, name)).parameters.values()] == [
        (p.name, p.default) for p in inspect.signature(ref_cls).parameters.values()]
    ref, mine = build(config)
    assert list(mine.state_dict()) == list(ref.state_dict())
    args = inputs(config)
    ref_out, my_out = ref(*args), mine(*args)
    if isinstance(ref_out, tuple):
        assert_close(my_out[0], ref_out[0], what="logits")
        assert_close(my_out[1], ref_out[1], what="loss")
        ref_loss, my_loss = ref_out[1], my_out[1]
        if config.startswith("s2s"):  # without targets: the last position's logits only
            assert_close(mine(*args[:2])[0], ref(*args[:2])[0], what="logits without targets")
            assert mine(*args[:2])[1] is None
    else:
        assert_close(my_out, ref_out, what="logits")
        ref_loss, my_loss = ref_out.square().mean(), my_out.square().mean()
    ref_loss.backward()
    my_loss.backward()
    grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    scale = max(g.abs().max().item() for g in grads.values())
    for n, p in mine.named_parameters():
        assert_close(p.grad if p.grad is not None else torch.zeros_like(p),
                     grads.get(n, torch.zeros_like(p)), what=f"grad of {n}", scale=scale)
    if name.endswith("LM"):
        assert mine.get_num_params() == ref.get_num_params()
        assert mine.get_num_params(non_embedding=False) == ref.get_num_params(non_embedding=False)
        prompt = args[0][:, :4]
        assert torch.equal(mine.generate(prompt, 8, top_k=1), ref.generate(prompt, 8, top_k=1))
    elif hasattr(ref, "get_num_params"):
        assert mine.get_num_params() == ref.get_num_params()
    else:  # the reference's vision models have none
        assert mine.get_num_params() == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("config", ["dat_lm_posemb_per_layer", "t_lm", "s2s", "vit_dat"])
def test_checkpoints_load_both_ways(config, tmp_path):
    name, ref_cls, kwargs = CONFIGS[config]
    ref, mine = build(config)
    args = inputs(config)
    mine.save_pretrained(tmp_path / "ours")
    reloaded_ref = ref_cls(**kwargs)
    from safetensors.torch import load_model
    load_model(reloaded_ref, str(tmp_path / "ours" / "model.safetensors"), strict=True)
    assert_close(reloaded_ref.eval()(*args)[0] if config != "vit_dat" else reloaded_ref.eval()(*args),
                 ref(*args)[0] if config != "vit_dat" else ref(*args))
    loaded = getattr(dac, name).from_pretrained(tmp_path / "ours")
    assert type(loaded) is getattr(dac, name) and not loaded.training
    assert all(not cpp._is_training() for cpp in (m.cpp_module for m in loaded.modules()
                                                    if isinstance(m, dac._module.CppModule)))
    out, ref_out = loaded(*args), ref(*args)
    assert_close(out[0] if isinstance(out, tuple) else out, ref_out[0] if isinstance(ref_out, tuple) else ref_out)


@pytest.mark.parametrize("hub_class", ["DualAttnTransformerLM_HFHub", "TransformerLM_HFHub"])
def test_hf_classes_read_what_the_reference_mixin_writes(hub_class, tmp_path, monkeypatch):
    config = "dat_lm_rope_symbolic" if hub_class.startswith("Dual") else "t_lm"
    kwargs = CONFIGS[config][2]
    torch.manual_seed(0)
    ref = getattr(ref_hf, hub_class)(**kwargs).eval()
    ref.save_pretrained(tmp_path)
    ours = getattr(dac.hf, hub_class).from_pretrained(str(tmp_path), dtype=torch.float64)
    assert isinstance(ours, getattr(dac, hub_class.removesuffix("_HFHub")))
    assert ours.layers.final_out.weight.dtype == torch.float64
    x, y = inputs(config)
    ref.double()
    assert_close(ours(x, y)[1], ref(x, y)[1])
    ours.save_pretrained(tmp_path / "again")
    again = getattr(ref_hf, hub_class).from_pretrained(str(tmp_path / "again"))
    assert_close(again.double()(x, y)[1], ref(x, y)[1], rtol=1e-6)
    # Not a folder, offline, nothing cached: the Hub client's error, an OSError as huggingface_hub's.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(dac.hf.LocalEntryNotFoundError, match="T-sa24-757M") as error:
        dac.hf.TransformerLM_HFHub.from_pretrained("awni00/T-sa24-757M")
    assert isinstance(error.value, dac.hf.HubError) and isinstance(error.value, OSError)
    assert (error.value.repo_id, error.value.filename) == ("awni00/T-sa24-757M", "config.json")


def test_shared_tensors_of_a_model_are_one_object_and_survive_copy():
    _, mine = build("dat_lm_posemb_per_layer")
    layers = mine.layers
    assert layers.token_embedder.weight is layers.final_out.weight
    libraries = [r.symbol_library for r in layers.symbol_retrievers]
    assert all(lib is libraries[0] for lib in libraries)
    for block in layers.blocks:
        ra = block.dual_attn.relational_attention
        assert ra.wk_rel is ra.wq_rel and block.dual_attn.self_attention.wq is ra.wq_attn
    clone = copy.deepcopy(mine)
    assert clone.layers.token_embedder.weight is clone.layers.final_out.weight
    x, y = inputs("dat_lm_posemb_per_layer")
    assert_close(clone(x, y)[1], mine(x, y)[1], rtol=0)
    # The containers are torch.nn's: they change as usual, and the C++ twin says it cannot follow.
    layers.blocks.append(dac.DualAttnEncoderBlock(16, 2, 2, 32, "relu", 0.0, True))
    with pytest.raises(RuntimeError, match="'layers.blocks.2' .* was added to the module tree"):
        mine.save_pretrained("unused")


def test_non_persistent_buffers_stay_out_of_the_state_dict():
    _, mine = build("dat_lm_rope_symbolic")
    assert {n for n, _ in mine.named_buffers()} == {"freqs_cos", "freqs_sin"}
    assert "freqs_cos" not in mine.state_dict()
    mine.double()
    assert mine.freqs_cos.dtype == torch.float64  # converted with the module, as in the reference


def test_configure_optimizers_groups_as_the_reference(capsys):
    ref, mine = build("dat_lm_posemb_per_layer")
    for module in (dac.language_models, dac.seq2seq_models, dac.vision_models):
        opt = module.configure_optimizers(mine, 0.1, 1e-3, (0.9, 0.95), "cpu")
        ref_opt = ref_lm.configure_optimizers(ref, 0.1, 1e-3, (0.9, 0.95), "cpu")
        assert isinstance(opt, torch.optim.AdamW)
        names = {id(p): n for n, p in mine.named_parameters()}
        ref_names = {id(p): n for n, p in ref.named_parameters()}
        for group, ref_group in zip(opt.param_groups, ref_opt.param_groups):
            assert [names[id(p)] for p in group["params"]] == [ref_names[id(p)] for p in ref_group["params"]]
            assert group["weight_decay"] == ref_group["weight_decay"] and group["lr"] == 1e-3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[3] and "num decayed parameter tensors" in out[0]
    linear = torch.nn.Linear(2, 2)  # the rule reads only dimensions: any module will do
    opt = dac.language_models.configure_optimizers(linear, 0.1, 1e-3, (0.9, 0.95), "cpu")
    assert [g["params"] for g in opt.param_groups] == [[linear.weight], [linear.bias]]


def test_a_small_lm_trains_with_adamw():
    torch.manual_seed(0)
    model = dac.DualAttnTransformerLM(**CONFIGS["dat_lm_rope_symbolic"][2])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.arange(T + 1).remainder(V).repeat(4, 1)  # a fixed sequence to memorise
    x, y = data[:, :-1], data[:, 1:]
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    model.eval()
    assert torch.equal(model.generate(x[:1, :3], 5, top_k=1)[0, 3:], data[0, 3:8])


def _readme_examples():
    text = importlib.metadata.metadata("dual-attention").get_payload()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(2), ids=["readme_example_1", "readme_example_2"])
def test_reference_readme_examples_run_with_the_import_changed(index):
    examples = _readme_examples()
    assert len(examples) == 2
    code = examples[index].replace("from dual_attention.", "from dual_attention_cpp.")
    assert "dual_attention_cpp" in code
    namespace = {"torch": torch}
    torch.manual_seed(0)
    exec(compile(code, f"README example {index}", "exec"), namespace)
    if index == 0:
        assert namespace["logits"].shape == (1, 128, 32000) and namespace["loss"].ndim == 0
        assert isinstance(namespace["dat_lm"], dac.DualAttnTransformerLM)
    else:
        assert namespace["logits"].shape == (1, 1000)
        assert isinstance(namespace["dat_vision"], dac.VisionDualAttnTransformer)
