"""The classes of dual_attention_cpp are torch.nn.Modules in everything users touch: trees of real
torch.nn children that own their tensors, with Python forwards; and the C++ twin that generation,
model analysis and save_pretrained run computes with what the Python tree holds at call time."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import dual_attention_cpp as dac
from bindings_support import assert_close, copy_reference_into, reference_class


def pairs(module):
    """(module, its C++ twin) for every submodule of ours (shared ones once)."""
    return [(m, m._twin("the test")) for m in module.modules() if isinstance(m, dac._module.CppModule)]


def reference_and_ours(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = reference_class(name)(**kwargs)
    mine = getattr(dac, name)(**kwargs)
    copy_reference_into(ref, mine)
    return ref, mine


DA_KW = dict(d_model=16, n_heads_sa=2, n_heads_ra=2, dropout=0.0)
X = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
S = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))


def test_parameters_and_buffers_start_on_the_cpp_modules_storage():
    model = dac.DualAttnEncoderBlock(16, 2, 2, 32, "relu", 0.0, True, ra_kwargs=dict(symmetric_rels=True))
    pe = dac.SinusoidalPositionalEncoding(16)
    for module in (model, pe):
        for mirror, cpp in pairs(module):
            cpp_params = dict(cpp._named_parameters())
            assert set(cpp_params) <= set(mirror._parameters)
            for name, tensor in cpp_params.items():
                own = mirror._parameters[name]  # a tensor of Python's own, on the same storage
                assert own is not tensor and own.data_ptr() == tensor.data_ptr()
                assert type(own) is nn.Parameter and own.requires_grad
            for name, tensor in cpp._named_buffers():
                assert mirror._buffers[name].data_ptr() == tensor.data_ptr()
    assert [k for k, _ in pe.named_buffers()] == ["pe"] and "pe" in pe.state_dict()


def test_shared_submodules_and_parameters_are_one_object():
    ra = dac.RelationalAttention(16, 4, symmetric_rels=True)
    assert ra.wk_rel is ra.wq_rel
    da = dac.DualAttention(**DA_KW, share_attn_params=True)
    assert da.self_attention.wq is da.relational_attention.wq_attn
    assert da.self_attention.wk is da.relational_attention.wk_attn
    ref = reference_class("DualAttention")(**DA_KW, share_attn_params=True)
    assert [n for n, _ in da.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert list(da.state_dict()) == list(ref.state_dict())


def test_in_place_changes_reach_the_forward():
    ref, mine = reference_and_ours("DualAttention", **DA_KW)
    with torch.no_grad():
        for p in mine.parameters():
            p.mul_(-0.5).add_(0.01)
    ref.load_state_dict(mine.state_dict())
    assert_close(mine(X, S)[0], ref(X, S)[0])

    def init(module):
        if isinstance(module, nn.Linear):  # the reference LM's _init_weights does this
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    torch.manual_seed(3)
    mine.apply(init)
    ref.load_state_dict(mine.state_dict())
    assert_close(mine(X, S)[0], ref(X, S)[0])


def test_load_state_dict_strict_reports_missing_unexpected_and_mismatched_keys():
    ref, mine = reference_and_ours("Attention", d_model=16, n_heads=4, dropout=0.0)
    state = ref.state_dict()
    missing = {k: v for k, v in state.items() if k != "wo.weight"}
    with pytest.raises(RuntimeError, match="Missing key.*wo.weight"):
        mine.load_state_dict(missing)
    with pytest.raises(RuntimeError, match="Unexpected key.*extra"):
        mine.load_state_dict({**state, "extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="size mismatch for wq.weight"):
        mine.load_state_dict({**state, "wq.weight": torch.zeros(3, 3)})
    result = mine.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["wo.weight"] and result.unexpected_keys == []


def test_load_state_dict_assign_takes_the_given_tensors_and_the_twin_follows():
    ref, mine = reference_and_ours("RelationalAttention", d_model=16, n_heads=4)
    state64 = {k: v.double() for k, v in ref.state_dict().items()}
    mine.load_state_dict(state64, assign=True)
    for name, p in mine.named_parameters():
        assert p.dtype == torch.float64 and p.data_ptr() == state64[name].data_ptr()
    ref.double()
    assert_close(mine(X.double(), S.double())[0], ref(X.double(), S.double())[0])
    mine._twin("the test")
    twin = mine._cpp_names()[0]
    for name, p in mine.named_parameters():
        assert twin[name].dtype == torch.float64 and twin[name].data_ptr() == p.data_ptr()


@pytest.mark.parametrize("flags", ["default", "overwrite", "swap"])
def test_conversions_reach_the_twin_whatever_the_conversion_flags(flags):
    saved = (torch.__future__.get_overwrite_module_params_on_conversion(),
             torch.__future__.get_swap_module_params_on_conversion())
    torch.__future__.set_overwrite_module_params_on_conversion(flags == "overwrite")
    torch.__future__.set_swap_module_params_on_conversion(flags == "swap")
    try:
        ref, mine = reference_and_ours("DualAttnEncoderBlock", d_model=16, n_heads_sa=2, n_heads_ra=2,
                                       dff=32, activation="relu", dropout_rate=0.0, norm_first=True)
        ref.eval(), mine.eval()
        mine(X, S)[0].sum().backward()
        mine.double()
        for name, p in mine.named_parameters():
            assert p.dtype == torch.float64 and p.grad.dtype == torch.float64
        for mirror, cpp in pairs(mine):
            assert all(t.dtype == torch.float64 for _, t in cpp._named_parameters())
        ref.double()
        assert_close(mine(X.double(), S.double()), ref(X.double(), S.double()))
        mine.to(torch.bfloat16)
        assert mine(X.bfloat16(), S.bfloat16()).dtype == torch.bfloat16
        mine.float()
        ref.to(torch.bfloat16).float()
        assert_close(mine(X, S), ref(X, S))
        mine.to("meta")  # an ordinary nn.Module conversion; the twin cannot follow it
        with pytest.raises(RuntimeError, match="'.*' is on the meta device"):
            mine._twin("the test")
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(saved[0])
        torch.__future__.set_swap_module_params_on_conversion(saved[1])


def test_float64_forward_matches_the_reference_in_float64():
    ref, mine = reference_and_ours("DualAttention", **DA_KW, ra_kwargs=dict(n_relations=8))
    ref.double(), mine.to(torch.float64)
    out, ref_out = mine(X.double(), S.double(), need_weights=True), ref(X.double(), S.double(), need_weights=True)
    assert_close(out[0], ref_out[0])
    assert_close(out[1], ref_out[1])
    for a, b in zip(out[2], ref_out[2]):
        assert_close(a, b)


def test_zero_grad_and_requires_grad_reach_cpp():
    mine = dac.Attention(16, 4, 0.0)
    out, _ = mine(X, X, X)
    out.sum().backward()
    assert all(p.grad is not None for p in mine.parameters())
    mine.zero_grad()
    assert all(p.grad is None for p in mine.parameters())
    mine.requires_grad_(False)
    assert not mine(X, X, X)[0].requires_grad
    assert all(not t.requires_grad for _, cpp in pairs(mine) for _, t in cpp._named_parameters())


def test_train_and_eval_control_dropout_and_reach_the_twin():
    model = dac.DualAttention(16, 2, 2, 0.5)
    assert model.training
    a, b = model(X, S)[0], model(X, S)[0]
    assert not torch.equal(a, b)  # dropout is on in training
    model.eval()
    assert not model.relational_attention.attn_dropout.training
    a, b = model(X, S)[0], model(X, S)[0]
    assert torch.equal(a, b)
    assert all(not cpp._is_training() for _, cpp in pairs(model))
    model.train()
    model.self_attention.eval()  # a part of the tree only
    model(X, S)
    for mirror, cpp in pairs(model):
        assert cpp._is_training() == mirror.training
    assert not model.self_attention.wq.training and model.relational_attention.training
    model.training = False  # assigning the flag directly also reaches the twin when next used
    assert not model.cpp_module._is_training()


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=False),
    lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True),
    lambda p: torch.optim.RMSprop(p, lr=1e-3),
    lambda p: torch.optim.Adagrad(p, lr=1e-2),
], ids=["sgd_momentum", "adam", "adamw", "adamw_for_loop", "adamw_fused", "rmsprop", "adagrad"])
def test_optimizers_train_ours_exactly_like_the_reference(make_optimizer):
    ref, mine = reference_and_ours("DualAttnEncoderBlock", d_model=16, n_heads_sa=2, n_heads_ra=2,
                                   dff=32, activation="gelu", dropout_rate=0.0, norm_first=True,
                                   ra_kwargs=dict(rel_activation="tanh"))
    opt_ref, opt_mine = make_optimizer(ref.parameters()), make_optimizer(mine.parameters())
    target = torch.randn(2, 5, 16)
    for _ in range(3):
        for model, opt in ((ref, opt_ref), (mine, opt_mine)):
            opt.zero_grad()
            loss = ((model(X, S) - target) ** 2).mean()
            loss.backward()
            opt.step()
    for (name, p), (_, q) in zip(mine.named_parameters(), ref.named_parameters()):
        assert_close(p, q, rtol=1e-4, what=name)
    assert_close(mine(X, S), ref(X, S), rtol=1e-4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = dac.DualAttention(**DA_KW, share_attn_params=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x, s):
        return self.head(self.attn(x, s)[0])


def test_nesting_in_a_python_module():
    torch.manual_seed(0)
    net, other = Net(), Net()
    assert list(net.parameters())[0] is net.attn.self_attention.wq.weight
    assert len(list(net.parameters())) == len(list(net.attn.parameters())) + 2
    keys = list(net.state_dict())
    assert "attn.self_attention.wq.weight" in keys and "attn.relational_attention.wr" in keys
    assert keys[-2:] == ["head.weight", "head.bias"]
    net.load_state_dict(other.state_dict())
    assert_close(net(X, S), other(X, S), rtol=0)
    net.to(torch.float64)
    assert net.attn.relational_attention.wr.dtype == torch.float64
    assert net(X.double(), S.double()).dtype == torch.float64
    net.eval()
    net(X.double(), S.double())
    assert all(not cpp._is_training() for _, cpp in pairs(net.attn))
    clone = copy.deepcopy(net)
    assert clone.attn.self_attention.wq is clone.attn.relational_attention.wq_attn
    assert_close(clone(X.double(), S.double()), net(X.double(), S.double()), rtol=0)


def test_repr_reads_like_the_reference():
    for name, kwargs in [
        ("DualAttention", dict(DA_KW, ra_kwargs=dict(symmetric_rels=True))),
        ("DualAttnDecoderBlock", dict(d_model=16, n_heads_sa=2, n_heads_ra=2, n_heads_cross=2, dff=32,
                                      activation="swiglu", dropout_rate=0.1, norm_first=False,
                                      norm_type="rmsnorm")),
        ("EncoderBlock", dict(d_model=16, n_heads=4, dff=None, dropout_rate=0.1, activation="relu",
                              norm_first=True)),
        ("RelationalSymbolicAttention", dict(d_model=16, rel_n_heads=2, symbolic_attn_n_heads=2,
                                             n_symbols=4, nbhd_delta=2)),
    ]:
        ref, mine = reference_and_ours(name, **kwargs)
        # The reference also lists its activation functions as submodules; ours are C++ functions.
        expected = "\n".join(line for line in repr(ref).splitlines() if "activation_)" not in line)
        assert repr(mine) == expected


def test_deepcopy_is_independent_and_keeps_sharing_flags_and_frozen_parameters():
    model = dac.DualAttnEncoderBlock(16, 2, 2, 32, "relu", 0.0, True, share_attn_params=True,
                                     ra_kwargs=dict(symmetric_rels=True))
    model.dual_attn.relational_attention.wr.requires_grad_(False)
    model.eval()
    model.ff_block.train()
    model.note = "kept"
    clone = copy.deepcopy(model)
    assert_close(clone(X, S), model(X, S), rtol=0)
    ra = clone.dual_attn.relational_attention
    assert ra.wk_rel is ra.wq_rel and clone.dual_attn.self_attention.wq is ra.wq_attn
    assert not ra.wr.requires_grad and clone.note == "kept"
    assert [m.training for m in clone.modules()] == [m.training for m in model.modules()]
    with torch.no_grad():
        clone.ff_block.linear1.weight.zero_()
    assert model.ff_block.linear1.weight.abs().sum() > 0
    assert not torch.equal(clone(X, S), model(X, S))
    linear = copy.deepcopy(model.ff_block.linear1)  # a plain torch.nn.Linear
    assert type(linear) is nn.Linear and linear.weight is not model.ff_block.linear1.weight
    assert_close(linear(X), model.ff_block.linear1(X), rtol=0)


def test_pickle_round_trip_through_torch_save():
    model = dac.SymbolicAttention(16, 4, 8, trainable_symbols=False).double()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is dac.SymbolicAttention and not loaded.symbol_library.requires_grad
    assert_close(loaded(X.double()), model(X.double()), rtol=0)
    plain = pickle.loads(pickle.dumps(dac.SinusoidalPositionalEncoding(16, dropout=0.0)))
    assert_close(plain(X), dac.SinusoidalPositionalEncoding(16, dropout=0.0)(X), rtol=0)
    q_proj = pickle.loads(pickle.dumps(model.q_proj))  # a submodule is an ordinary module too
    assert_close(q_proj(X.double()), model.q_proj(X.double()), rtol=0)
    ra = dac.RelationalAttention(16, 4)
    ra.implementation = "blockwise"
    clone = pickle.loads(pickle.dumps(ra))
    assert clone.implementation == "blockwise"
    assert_close(clone(X, S, need_weights=False)[0], ra(X, S, need_weights=False)[0], rtol=0)


class LowRank(nn.Module):
    """A LoRA-style wrapper, as PEFT makes them: base(x) + x A^T B^T."""

    def __init__(self, base, rank=2):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.B = nn.Parameter(torch.randn(base.out_features, rank) * 0.1)

    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T


def test_children_and_parameters_can_be_replaced_and_the_forward_uses_them():
    ref, mine = reference_and_ours("RelationalAttention", d_model=16, n_heads=4)
    torch.manual_seed(5)
    mine.wq_attn = LowRank(mine.wq_attn)
    ref.wq_attn = copy.deepcopy(mine.wq_attn)
    mine.wr = nn.Parameter(torch.randn_like(mine.wr))
    ref.wr = nn.Parameter(mine.wr.detach().clone())
    del mine.wo.weight  # as parametrizations and pruning do
    mine.wo.weight = ref.wo.weight.detach().clone()
    assert_close(mine(X, S)[0], ref(X, S)[0])
    model = dac.RelationalAttention(16, 4)
    model.extra = nn.Linear(16, 2)  # a Python-only submodule joins the tree
    assert "extra.weight" in model.state_dict()


def test_the_twin_says_what_it_cannot_follow():
    model = dac.DualAttention(**DA_KW)
    assert model._twin("the test") is not None
    model.self_attention.wq = LowRank(model.self_attention.wq)
    with pytest.raises(RuntimeError, match="'self_attention.wq' is a LowRank, not the Linear"):
        model._twin("save_pretrained")
    with pytest.raises(RuntimeError, match="cannot stand for this module"):
        model.self_attention.cpp_module
    model = dac.DualAttention(**DA_KW)
    handle = model.relational_attention.register_forward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match="'relational_attention' has a forward hook"):
        model._twin("the test")
    handle.remove()
    torch.nn.utils.parametrizations.weight_norm(model.relational_attention.wo)
    with pytest.raises(RuntimeError, match="relational_attention.wo"):
        model._twin("the test")


def test_hooks_on_submodules_fire_inside_the_parents_forward():
    model = dac.DualAttention(**DA_KW)
    calls = []
    model.self_attention.register_forward_hook(lambda *a: calls.append("sa"))
    model.relational_attention.wq_rel.register_forward_hook(lambda *a: calls.append("wq_rel"))
    model(X, S)
    assert sorted(calls) == ["sa", "wq_rel"]


def test_builtin_children_are_their_torch_nn_classes_and_callable():
    block = dac.EncoderBlock(16, 4, 32, 0.1, "relu", True)
    assert isinstance(block.self_attn.wq, nn.Linear) and isinstance(block.norm1, nn.LayerNorm)
    assert isinstance(block.dropout, nn.Dropout) and isinstance(block.self_attn, dac.Attention)
    assert_close(block.self_attn.wq(X), X @ block.self_attn.wq.weight.T, rtol=1e-6)
    assert_close(block.norm1(X), nn.functional.layer_norm(X, (16,), block.norm1.weight, block.norm1.bias))
    assert block.ff_block.linear1.bias is not None and block.self_attn.wq.bias is None
    out, scores = block.self_attn(X, X, X, need_weights=True)  # a child can run on its own
    assert scores.shape == (2, 4, 5, 5)
    rms = dac.transformer_blocks.create_norm(16, "rmsnorm")
    assert isinstance(rms, dac.RMSNorm)
    assert isinstance(dac.transformer_blocks.create_norm(16, "none"), nn.Identity)
    for child in block.modules():
        assert isinstance(child, dac._module.CppModule) or type(child).__module__.startswith("torch.nn")
