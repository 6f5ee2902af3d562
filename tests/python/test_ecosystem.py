"""Our language models in the PyTorch ecosystem (issue 14), with the reference as the oracle.

Each test applies one ecosystem feature as a user would to small language models: a
DualAttnTransformerLM with RoPE and symbolic attention ("dat"), one with learned positional
embeddings, positional symbols, post-norm and share_attn_params ("dat_pe"), and a TransformerLM
("tlm"). The reference model and ours hold the same parameters (the reference's, redrawn so that
logits are O(1), loaded into ours with strict=True). The same feature is applied to both, and the
outputs and gradients must be equal. Tolerances are absolute, scaled by max(1, max |expected|)
(for gradients, by max(1, the largest gradient of the model)): float32 1e-5 unless stated.

  - torch.func.functional_call with other parameters (random, zeros), and its gradients;
  - a LoRA-style wrapper around Linear submodules (as PEFT does), the rest frozen;
  - torch.nn.utils.parametrizations.weight_norm, torch.nn.utils.prune.l1_unstructured;
  - torch.ao.quantization.quantize_dynamic on nn.Linear (qint8);
  - torch.compile(fullgraph=True), forward and backward, against eager;
  - torch.export.export of the forward;
  - torch.jit.script: works or raises a Python exception that says TorchScript, never a crash;
  - still fine: meta-device init + to_empty, load_state_dict(assign=True), deepcopy, pickle,
    bfloat16, activation checkpointing.
FSDP and DDP are in test_distributed.py.

To check the tests themselves, run them with the reference standing in for our package:
    DUAL_ATTENTION_CPP_STANDIN=reference pytest tests/python/test_ecosystem.py
Every test then compares the reference with itself through the same code paths, and must pass
(except the wording check of the TorchScript test: the reference's error does not say TorchScript).
"""

import copy
import importlib
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

STANDIN = os.environ.get("DUAL_ATTENTION_CPP_STANDIN", "") == "reference"
if not STANDIN:
    import dual_attention_cpp  # noqa: F401  (fails here, loudly, when the package is not built)
REF_PACKAGE = "dual_attention"
OUR_PACKAGE = REF_PACKAGE if STANDIN else "dual_attention_cpp"
ref_lm = importlib.import_module(f"{REF_PACKAGE}.language_models")
our_lm = importlib.import_module(f"{OUR_PACKAGE}.language_models")

V, D, T = 48, 16, 12
CONFIGS = {
    "dat": ("DualAttnTransformerLM", dict(
        vocab_size=V, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2, dff=32, dropout_rate=0.0,
        activation="swiglu", norm_first=True, max_block_size=T, pos_enc_type="RoPE",
        symbol_retrieval="symbolic_attention",
        symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8))),
    "dat_pe": ("DualAttnTransformerLM", dict(
        vocab_size=V, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2, dff=32, dropout_rate=0.0,
        activation="gelu", norm_first=False, max_block_size=T, pos_enc_type="pos_emb",
        share_attn_params=True, symbol_retrieval="positional_symbols",
        symbol_retrieval_kwargs=dict(symbol_dim=D, max_length=T))),
    "tlm": ("TransformerLM", dict(
        vocab_size=V, d_model=D, n_layers=2, n_heads=2, dff=32, dropout_rate=0.0,
        activation="gelu", norm_first=True, max_block_size=T)),
}
ALL = sorted(CONFIGS)

# The Linear submodules that the LoRA, weight_norm and pruning tests transform (reference paths).
LORA_TARGETS = {
    "dat": ["layers.blocks.0.dual_attn.self_attention.wq",
            "layers.blocks.0.dual_attn.relational_attention.wk_rel",
            "layers.blocks.0.dual_attn.relational_attention.wo",
            "layers.blocks.1.dual_attn.self_attention.wo"],
    "tlm": ["layers.blocks.0.self_attn.wq", "layers.blocks.0.self_attn.wo",
            "layers.blocks.1.ff_block.linear1"],
}
WEIGHT_NORM_TARGETS = {
    "dat": ["layers.final_out", "layers.blocks.1.ff_block.linear2",
            "layers.blocks.0.dual_attn.relational_attention.wv"],
    "dat_pe": ["layers.final_out", "layers.blocks.0.dual_attn.relational_attention.wq_rel"],
    "tlm": ["layers.final_out", "layers.blocks.0.self_attn.wk"],
}
PRUNE_TARGETS = {
    "dat": ["layers.blocks.0.dual_attn.self_attention.wv",
            "layers.blocks.1.dual_attn.relational_attention.wq_rel",
            "layers.blocks.0.ff_block.linear1", "layers.symbol_retrievers.0.q_proj"],
    "dat_pe": ["layers.blocks.0.dual_attn.relational_attention.wk_rel",
               "layers.blocks.1.dual_attn.self_attention.wo", "layers.blocks.1.ff_block.linear2"],
    "tlm": ["layers.blocks.0.self_attn.wv", "layers.blocks.1.ff_block.linear2"],
}


# ---------------------------------------------------------------------------------------------
# helpers


def random_parameters(module, seed):
    """{name: tensor} for every parameter of `module` (named_parameters: tied ones once), drawn
    so that logits are O(1): matrices N(0, 1/fan_in), norm weights 1 + N(0, 0.2^2), other vectors
    N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            t = torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1])
        elif "norm" in name and name.endswith("weight"):
            t = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        else:
            t = 0.2 * torch.randn(p.shape, generator=g)
        out[name] = t.to(p.dtype)
    return out


def build(config, seed=0):
    """(reference, ours) in eval mode with the same parameters."""
    cls_name, kwargs = CONFIGS[config]
    torch.manual_seed(seed)
    ref = getattr(ref_lm, cls_name)(**copy.deepcopy(kwargs))
    with torch.no_grad():
        for name, value in random_parameters(ref, seed + 1).items():
            ref.get_parameter(name).copy_(value)
    ours = getattr(our_lm, cls_name)(**copy.deepcopy(kwargs))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def tokens(seed=3, batch=2, t=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, t + 1), generator=g)


def xy(seed=3):
    batch = tokens(seed)
    return batch[:, :-1], batch[:, 1:]


def assert_close(actual, expected, atol, what, scale=None):
    """max |actual - expected| <= atol * max(1, scale), with the cause on failure; scale is
    max |expected| unless given (gradients: the largest gradient of the model)."""
    assert isinstance(actual, torch.Tensor), f"{what}: got {type(actual).__name__}, not a tensor"
    assert actual.shape == expected.shape, (
        f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.detach().double(), expected.detach().double()
    if scale is None:
        scale = e.abs().max().item() if e.numel() else 1.0
    scale = max(1.0, scale)
    diff = (a - e).abs().max().item() if e.numel() else 0.0
    assert diff <= atol * scale, (
        f"{what}: max abs diff {diff:.3e} > {atol:g} * {scale:.3g} (shape {tuple(e.shape)}, "
        f"max |expected| {e.abs().max().item():.3e}, max |actual| {a.abs().max().item():.3e})")


def assert_differs(actual, baseline, at_least, what):
    """The feature changed the output: max |actual - baseline| >= at_least."""
    diff = (actual.detach().double() - baseline.detach().double()).abs().max().item()
    assert diff >= at_least, (
        f"{what}: the output equals the untransformed model's (max abs diff {diff:.3e} < "
        f"{at_least:g}): the transformation is not used")


def grads(module):
    """{name: grad} of the parameters that received one."""
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_grads_equal(ours, ref, atol, what):
    g_ref, g_ours = grads(ref), grads(ours)
    assert sorted(g_ours) == sorted(g_ref), (
        f"{what}: parameters with gradients differ: only ours {sorted(set(g_ours) - set(g_ref))}, "
        f"only the reference {sorted(set(g_ref) - set(g_ours))}")
    scale = max((g.abs().max().item() for g in g_ref.values()), default=1.0)
    for name, g in g_ref.items():
        # measured against the largest gradient of the model (some are zero up to rounding)
        assert_close(g_ours[name], g, atol, f"{what}: grad of {name}", scale=scale)


def replace_submodule(model, path, new):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)


def same_parameter_names(ours, ref):
    names_ours = [n for n, _ in ours.named_parameters()]
    names_ref = [n for n, _ in ref.named_parameters()]
    assert names_ours == names_ref, (
        f"named_parameters differ: only ours {sorted(set(names_ours) - set(names_ref))}, only the "
        f"reference {sorted(set(names_ref) - set(names_ours))}" if set(names_ours) != set(names_ref)
        else "named_parameters: same names, different order")


# ---------------------------------------------------------------------------------------------
# 1. torch.func.functional_call


@pytest.mark.parametrize("config", ALL)
def test_functional_call_uses_the_parameters_it_is_given(config):
    # A fresh pair of models for every call: torch 2.13's functional_call does not restore the
    # parameters of a module reachable by two paths (the reference's shared symbol retriever,
    # layers.symbol_retrievers.0 is .1): the given tensors stay in it afterwards.
    ref, ours = build(config)
    same_parameter_names(ours, ref)
    x, y = xy()
    with torch.no_grad():
        own = ours(x)[0]
    draws = {
        "random": random_parameters(ref, seed=11),
        "zeros": {n: torch.zeros_like(p) for n, p in ref.named_parameters()},
    }
    for label, params in draws.items():
        ref, ours = build(config)
        with torch.no_grad():
            expected = functional_call(ref, params, (x,))[0]
            got = functional_call(ours, params, (x,))[0]
        assert_close(got, expected, 1e-5, f"functional_call, {label} parameters: logits")
        assert_differs(got, own, 1e-2, f"functional_call, {label} parameters")
    # zeros: a zero final_out gives logits of exactly zero
    assert not expected.any(), "the reference's logits under zero parameters are not all zero"
    assert torch.equal(got, expected), (
        f"functional_call, zero parameters: logits are not exactly the reference's "
        f"(max |logits| {got.abs().max().item():.3e})")

    # gradients with respect to the given parameters (MAML, torch.func)
    params = random_parameters(ref, seed=12)
    ref, ours = build(config)
    results = {}
    for who, model in (("reference", ref), ("ours", ours)):
        leaves = {n: t.clone().requires_grad_() for n, t in params.items()}
        loss = functional_call(model, leaves, (x, y))[1]
        g = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        results[who] = (loss, dict(zip(leaves, g)))
    assert_close(results["ours"][0], results["reference"][0], 1e-5, "functional_call loss")
    g_ref, g_ours = results["reference"][1], results["ours"][1]
    scale = max(g.abs().max().item() for g in g_ref.values() if g is not None)
    for name, g in g_ref.items():
        if g is None:
            assert g_ours[name] is None or not g_ours[name].any(), f"grad of unused {name}"
        else:
            assert g_ours[name] is not None, f"functional_call: no gradient reaches {name}"
            assert_close(g_ours[name], g, 1e-5, f"functional_call: grad of {name}", scale=scale)


# ---------------------------------------------------------------------------------------------
# 2. LoRA-style wrappers


class LoRALinear(nn.Module):
    """base(x) + x A^T B^T, as PEFT's LoRA layers compute it (rank r, no scaling)."""

    def __init__(self, base, a, b):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(a.clone())
        self.lora_B = nn.Parameter(b.clone())

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t()) @ self.lora_B.t()


def add_lora(model, config, seed=21, rank=2):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for path in LORA_TARGETS[config]:
        base = model.get_submodule(path)
        a = torch.randn(rank, base.in_features, generator=g) / math.sqrt(base.in_features)
        b = 0.5 * torch.randn(base.out_features, rank, generator=g)  # nonzero: the term counts
        replace_submodule(model, path, LoRALinear(base, a, b))


@pytest.mark.parametrize("config", sorted(LORA_TARGETS))
def test_lora_wrappers_are_used_and_only_they_train(config):
    ref, ours = build(config)
    x, y = xy()
    with torch.no_grad():
        plain = ours(x)[0]
    add_lora(ref, config)
    add_lora(ours, config)
    for path in LORA_TARGETS[config]:
        assert isinstance(ours.get_submodule(path), LoRALinear), f"{path} was not replaced"
    logits_ref, loss_ref = ref(x, y)
    logits, loss = ours(x, y)
    assert_close(logits, logits_ref, 1e-5, "LoRA: logits")
    assert_differs(logits, plain, 1e-3, "LoRA")
    loss_ref.backward()
    loss.backward()
    lora = sorted(n for n, _ in ref.named_parameters() if ".lora_" in n)
    assert len(lora) == 2 * len(LORA_TARGETS[config])
    assert sorted(grads(ours)) == lora, (
        f"LoRA: gradients reached {sorted(grads(ours))}, expected only the low-rank {lora}")
    assert_grads_equal(ours, ref, 1e-5, "LoRA")
    assert all(g.abs().max() > 0 for g in grads(ours).values())


# ---------------------------------------------------------------------------------------------
# 3. parametrizations and pruning


def apply_weight_norm(model, config):
    for i, path in enumerate(WEIGHT_NORM_TARGETS[config]):
        module = weight_norm(model.get_submodule(path))
        with torch.no_grad():  # g != |v|: the parametrization changes the weight
            module.parametrizations.weight.original0.mul_(1.5 if i % 2 == 0 else 0.5)


def apply_pruning(model, config):
    for path in PRUNE_TARGETS[config]:
        prune.l1_unstructured(model.get_submodule(path), "weight", 0.5)


@pytest.mark.parametrize("transform", ["weight_norm", "l1_unstructured"])
@pytest.mark.parametrize("config", ALL)
def test_parametrization_and_pruning_are_used(config, transform):
    ref, ours = build(config)
    x, y = xy()
    with torch.no_grad():
        plain = ours(x)[0]
    apply = apply_weight_norm if transform == "weight_norm" else apply_pruning
    apply(ref, config)
    apply(ours, config)
    same_parameter_names(ours, ref)
    if transform == "l1_unstructured":
        for path in PRUNE_TARGETS[config]:
            w = ours.get_submodule(path).weight
            assert (w == 0).sum().item() == w.numel() // 2, f"{path}: not half pruned"
    logits_ref, loss_ref = ref(x, y)
    logits, loss = ours(x, y)
    assert_close(logits, logits_ref, 1e-5, f"{transform}: logits")
    assert_differs(logits, plain, 1e-3, transform)
    loss_ref.backward()
    loss.backward()
    assert_grads_equal(ours, ref, 1e-5, transform)


# ---------------------------------------------------------------------------------------------
# 4. dynamic quantization


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("config", ALL)
def test_quantize_dynamic_uses_the_quantized_linears(config):
    ref, ours = build(config)
    x, _ = xy()
    qref = torch.ao.quantization.quantize_dynamic(ref, {nn.Linear}, dtype=torch.qint8)
    qours = torch.ao.quantization.quantize_dynamic(ours, {nn.Linear}, dtype=torch.qint8)

    def quantized(model):
        return sorted(n for n, m in model.named_modules()
                      if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))

    assert quantized(qref), "the reference has no dynamically quantized Linear"
    assert quantized(qours) == quantized(qref), (
        f"quantized Linears differ: ours {quantized(qours)}, the reference {quantized(qref)}")
    with torch.no_grad():
        expected = qref(x)[0]
        got = qours(x)[0]
        plain = ours(x)[0]
    assert_close(got, expected, 1e-4, "quantize_dynamic: logits")
    assert_differs(got, plain, 1e-3, "quantize_dynamic")


# ---------------------------------------------------------------------------------------------
# 5. torch.compile (one compiled model: ~1.5 min of inductor on a 2-core CPU)


def test_torch_compile_fullgraph_forward_and_backward_equal_eager():
    torch._dynamo.reset()
    ref, ours = build("dat")  # RoPE and symbolic attention
    ours.train()  # dropout_rate 0: training mode, deterministic
    x, y = xy()
    logits_eager, loss_eager = ours(x, y)
    loss_eager.backward()
    eager_grads = {n: g.clone() for n, g in grads(ours).items()}
    ours.zero_grad(set_to_none=True)

    compiled = torch.compile(ours, fullgraph=True)
    logits, loss = compiled(x, y)
    loss.backward()
    assert_close(logits, logits_eager, 1e-4, "torch.compile: logits")
    assert_close(loss, loss_eager, 1e-4, "torch.compile: loss")
    compiled_grads = grads(ours)
    assert sorted(compiled_grads) == sorted(eager_grads), (
        f"torch.compile: parameters with gradients {sorted(compiled_grads)} != eager "
        f"{sorted(eager_grads)}")
    scale = max(g.abs().max().item() for g in eager_grads.values())
    for name, g in eager_grads.items():
        assert_close(compiled_grads[name], g, 1e-4, f"torch.compile: grad of {name}", scale=scale)
    # eager equals the reference too
    logits_ref, _ = ref(x, y)
    assert_close(logits_eager, logits_ref, 1e-5, "eager logits against the reference")


# ---------------------------------------------------------------------------------------------
# 6. torch.export


@pytest.mark.parametrize("config", ALL)
def test_torch_export_gives_the_same_logits(config):
    ref, ours = build(config)
    x, _ = xy()
    exported = torch.export.export(ours, (x,))
    module = exported.module()
    for seed in (3, 4):  # the inputs are inputs, not constants of the graph
        x, _ = xy(seed)
        with torch.no_grad():
            expected = ours(x)[0]
            got = module(x)[0]
        assert_close(got, expected, 1e-5, f"torch.export (inputs seed {seed}): logits")
        with torch.no_grad():
            assert_close(got, ref(x)[0], 1e-5, f"torch.export (seed {seed}) against the reference")


# ---------------------------------------------------------------------------------------------
# 7. TorchScript: works, or a Python exception that says so; never a crash

JIT_SCRIPT = """
import importlib, sys, torch
lm = importlib.import_module({package!r} + ".language_models")
ra = importlib.import_module({package!r} + ".relational_attention")
torch.manual_seed(0)
if {what!r} == "lm":
    model = lm.DualAttnTransformerLM(**{kwargs!r}).eval()
    inputs = (torch.randint(0, {V}, (2, {T})),)
else:
    model = ra.RelationalAttention(d_model={D}, n_heads=2, n_relations=4).eval()
    inputs = (torch.randn(2, {T}, {D}), torch.randn(2, {T}, {D}))
scripted = torch.jit.script(model)
# if it scripts, it must compute the same thing
with torch.no_grad():
    a, b = model(*inputs), scripted(*inputs)
a = a[0] if isinstance(a, tuple) else a
b = b[0] if isinstance(b, tuple) else b
assert (a - b).abs().max().item() <= 1e-5, "scripted output differs"
print("SCRIPTED AND EQUAL")
"""


@pytest.mark.parametrize("what", ["lm", "relational_attention"])
def test_torch_jit_script_raises_a_python_exception_not_a_crash(what):
    code = JIT_SCRIPT.format(package=OUR_PACKAGE, what=what, kwargs=CONFIGS["dat"][1],
                             V=V, T=T, D=D)
    env = dict(os.environ)
    if not STANDIN:
        path = str(Path(dual_attention_cpp.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300)
    tail = result.stderr[-3000:]
    assert result.returncode >= 0, (
        f"torch.jit.script({what}) killed the interpreter with signal {-result.returncode}\n{tail}")
    if result.returncode == 0:  # scripting works: allowed, with equal outputs
        assert "SCRIPTED AND EQUAL" in result.stdout, result.stdout
        return
    assert result.returncode == 1, (
        f"torch.jit.script({what}): exit status {result.returncode}, not an uncaught Python "
        f"exception (1)\n{tail}")
    assert "Traceback (most recent call last)" in result.stderr and re.search(
        r"^[A-Za-z_][\w.]*(Error|Exception)\b", result.stderr, re.M), (
        f"torch.jit.script({what}): no Python traceback and exception in stderr:\n{tail}")
    says_torchscript = "torchscript" in result.stderr.lower()
    assert says_torchscript, (
        f"torch.jit.script({what}) raised, but the error does not say TorchScript:\n{tail}")


# ---------------------------------------------------------------------------------------------
# 8. still fine: meta init, assign, deepcopy, pickle, bf16, activation checkpointing


@pytest.mark.parametrize("config", ["dat_pe", "tlm"])  # learned positions: RoPE tables are
def test_meta_device_init_then_to_empty_and_load_state_dict(config):  # non-persistent buffers
    ref, _ = build(config)
    cls_name, kwargs = CONFIGS[config]
    with torch.device("meta"):
        ours = getattr(our_lm, cls_name)(**copy.deepcopy(kwargs))
    not_meta = [n for n, t in [*ours.named_parameters(), *ours.named_buffers()] if not t.is_meta]
    ours.to_empty(device="cpu")
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x, _ = xy()
    with torch.no_grad():
        assert_close(ours(x)[0], ref(x)[0], 1e-5, "meta init + to_empty + load_state_dict: logits")
    # built under torch.device("meta"), nothing was allocated (what meta init is for)
    assert not not_meta, f"meta init: {len(not_meta)} tensors not on meta, e.g. {not_meta[:4]}"


@pytest.mark.parametrize("config", ALL)
def test_load_state_dict_assign(config):
    ref, _ = build(config)
    cls_name, kwargs = CONFIGS[config]
    devices = ["cpu"] if config == "dat" else ["cpu", "meta"]  # RoPE tables: see above
    x, _ = xy()
    with torch.no_grad():
        expected = ref(x)[0]
    for device in devices:
        with torch.device(device):
            ours = getattr(our_lm, cls_name)(**copy.deepcopy(kwargs))
        state = {k: v.clone() for k, v in ref.state_dict().items()}
        ours.load_state_dict(state, strict=True, assign=True)
        ours.eval()
        assert not any(t.is_meta for t in ours.state_dict().values()), (
            f"{device}: tensors left on meta after load_state_dict(assign=True)")
        w = ours.get_submodule("layers.blocks.0.norm1").weight
        assert w.data_ptr() == state["layers.blocks.0.norm1.weight"].data_ptr(), (
            f"{device}: load_state_dict(assign=True) did not take the given tensor")
        with torch.no_grad():
            assert_close(ours(x)[0], expected, 1e-5, f"{device}: assign=True: logits")


@pytest.mark.parametrize("config", ALL)
def test_deepcopy_and_pickle_round_trip(config):
    ref, ours = build(config)
    x, _ = xy()
    with torch.no_grad():
        expected = ref(x)[0]
        copied = copy.deepcopy(ours)
        unpickled = pickle.loads(pickle.dumps(ours))
        # the copies are independent of the original
        for p in ours.parameters():
            p.zero_()
        assert_close(copied(x)[0], expected, 1e-5, "deepcopy: logits")
        assert_close(unpickled(x)[0], expected, 1e-5, "pickle round trip: logits")


@pytest.mark.parametrize("config", ALL)
def test_bfloat16_forward_matches_the_reference(config):
    ref, ours = build(config)
    ref.to(torch.bfloat16)
    ours.to(torch.bfloat16)
    x, _ = xy()
    with torch.no_grad():
        expected = ref(x)[0]
        got = ours(x)[0]
    assert expected.dtype == torch.bfloat16
    assert_close(got, expected, 2e-2, "bfloat16: logits")


class Checkpointed(nn.Module):
    """Activation checkpointing around a block (non-reentrant, as FSDP users apply it)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


@pytest.mark.parametrize("config", ALL)
def test_activation_checkpointing_gradients(config):
    ref, ours = build(config)
    x, y = xy()
    ours.train()
    _, loss = ours(x, y)
    loss.backward()
    plain = {n: g.clone() for n, g in grads(ours).items()}
    ours.zero_grad(set_to_none=True)
    for model in (ref, ours):
        model.train()
        for i, block in enumerate(model.layers.blocks):
            model.layers.blocks[i] = Checkpointed(block)
    _, loss_ref = ref(x, y)
    _, loss = ours(x, y)
    assert_close(loss, loss_ref, 1e-5, "activation checkpointing: loss")
    loss_ref.backward()
    loss.backward()
    assert_grads_equal(ours, ref, 1e-5, "activation checkpointing")
    for name, g in grads(ours).items():  # and equal to ours without checkpointing
        assert_close(g, plain[name.replace(".block.", ".", 1)], 1e-6,
                     f"checkpointed against plain: grad of {name}")
