"""Our modules under torch.distributed: DistributedDataParallel, FSDP2 (fully_shard) and the older
FullyShardedDataParallel wrapper; 2 processes, gloo on loopback, 1 thread each (issue 15's Python
part; FSDP needs the Python modules of issue 14).

After k SGD steps on a DAT LM with a tied embedding, a shared symbol retriever and
share_attn_params, the parameters equal one process's over the same global batch within 1e-6
relative in float32 (SGD: Adam's division amplifies float noise in near-zero gradients). Rank 0's
state_dict (for FSDP: gathered with torch.distributed.checkpoint's get_model_state_dict,
full_state_dict=True) loads in the reference and gives our logits.

DUAL_ATTENTION_CPP_STANDIN=reference runs the same tests with the reference's model standing in
for ours (a check of the tests themselves)."""

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from dual_attention import language_models as ref_lm

if os.environ.get("DUAL_ATTENTION_CPP_STANDIN", "") == "reference":
    OurLM = ref_lm.DualAttnTransformerLM
else:
    import dual_attention_cpp as dac

    OurLM = dac.DualAttnTransformerLM

V, D, T = 48, 16, 12
CONFIG = dict(vocab_size=V, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2, dff=32,
              dropout_rate=0.0, activation="swiglu", norm_first=True, max_block_size=T,
              pos_enc_type="RoPE", share_attn_params=True,
              symbol_retrieval="symbolic_attention",
              symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8))
WORLD, STEPS, GLOBAL_BATCH, LR = 2, 3, 4, 0.5


def model_and_batches():
    torch.manual_seed(0)
    model = OurLM(**CONFIG)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, V, (GLOBAL_BATCH, T + 1), generator=g) for _ in range(STEPS)]
    return model, batches


def train(model, batches, rank=0, world=1):
    """STEPS SGD steps; each rank takes its contiguous shard of every global batch."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    per_rank = GLOBAL_BATCH // world
    for batch in batches:
        shard = batch[rank * per_rank:(rank + 1) * per_rank]
        _, loss = model(shard[:, :-1], shard[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, out, mode="ddp"):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model, batches = model_and_batches()
        full_numel = sum(p.numel() for p in model.parameters())
        if mode == "ddp":
            ddp = DistributedDataParallel(model)
            train(ddp, batches, rank, WORLD)
            result = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif mode == "fsdp2":
            mesh = init_device_mesh("cpu", (WORLD,))
            for block in model.layers.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            train(model, batches, rank, WORLD)
            local_numel = sum(
                (p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
            not_dtensor = [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
            params = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
                      for n, p in model.named_parameters()}
            state = get_model_state_dict(
                model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            result = dict(params=params, state=state, local_numel=local_numel,
                          full_numel=full_numel, not_dtensor=not_dtensor)
        elif mode == "fsdp1":
            model = FullyShardedDataParallel(
                model, auto_wrap_policy=ModuleWrapPolicy({type(model.layers.blocks[0])}),
                device_id=torch.device("cpu"))
            train(model, batches, rank, WORLD)
            local_numel = sum(p.numel() for p in model.parameters())
            # cpu_offload=True (rank 0 only) fails on CPU in torch 2.13, for the reference's model
            # too: "RuntimeError: setStorage: sizes [768], strides [1], storage offset 0, and
            # itemsize 4 requiring a storage size of 3072 are out of bounds for storage of size 0"
            # (FSDP's _flat_param.py _get_unflat_views_unaligned); every rank gathers instead.
            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
            state = {k: v.detach().clone() for k, v in state.items()}
            result = dict(state=state, local_numel=local_numel, full_numel=full_numel)
        else:
            raise ValueError(mode)
        if rank == 0:
            tmp = out + ".tmp"
            torch.save(result, tmp)
            os.replace(tmp, out)
    finally:
        dist.destroy_process_group()


def run_workers(tmp_path_factory, mode):
    out = str(tmp_path_factory.mktemp(mode) / "rank0.pt")
    mp.start_processes(worker, args=(free_port(), out, mode), nprocs=WORLD, join=True,
                       start_method="spawn")
    return torch.load(out)


@pytest.fixture(scope="module")
def ddp_state(tmp_path_factory):
    return run_workers(tmp_path_factory, "ddp")


@pytest.fixture(scope="module")
def fsdp2_result(tmp_path_factory):
    return run_workers(tmp_path_factory, "fsdp2")


@pytest.fixture(scope="module")
def fsdp1_result(tmp_path_factory):
    return run_workers(tmp_path_factory, "fsdp1")


@pytest.fixture(scope="module")
def one_process():
    """(initial state_dict, state_dict after the steps, parameter names) of one process over the
    global batches."""
    torch.set_num_threads(1)
    model, batches = model_and_batches()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, batches)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return initial, final, [n for n, _ in model.named_parameters()]


def assert_equal_to_one_process(got, expected, what):
    assert sorted(got) == sorted(expected), (
        f"{what}: names differ: only distributed {sorted(set(got) - set(expected))}, only one "
        f"process {sorted(set(expected) - set(got))}")
    for name, value in expected.items():
        assert got[name].shape == value.shape, f"{what}: {name}: shape {tuple(got[name].shape)}"
        err = (got[name] - value).abs().max().item()
        scale = max(1.0, value.abs().max().item())
        assert err <= 1e-6 * scale, f"{what}: {name} differs from one process by {err:.3e}"


def assert_loads_in_the_reference(state, what):
    ref = ref_lm.DualAttnTransformerLM(**CONFIG).eval()
    ref.load_state_dict(state, strict=True)
    ours = OurLM(**CONFIG).eval()
    ours.load_state_dict(state, strict=True)
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_logits, _ = ref(idx, idx)
        logits, _ = ours(idx, idx)
    err = (logits - ref_logits).abs().max().item()
    assert err <= 1e-5 * max(1.0, ref_logits.abs().max().item()), (
        f"{what}: logits differ from the reference's by {err:.3e}")


def test_ddp_steps_equal_one_process_over_the_global_batch(ddp_state, one_process):
    initial, expected, _ = one_process
    assert list(ddp_state) == list(expected)
    moved = {}
    for name, value in expected.items():
        moved[name] = (value - initial[name]).abs().max().item()
        err = (ddp_state[name] - value).abs().max().item()
        scale = max(1.0, value.abs().max().item())
        assert err <= 1e-6 * scale, f"{name}: DDP differs from one process by {err}"
    # The steps really trained: every parameter moved, the output layer by more than 1e-3.
    assert min(moved.values()) > 0, [name for name, m in moved.items() if m == 0]
    assert moved["layers.final_out.weight"] > 1e-3, moved["layers.final_out.weight"]
    # Tied and shared tensors stay one tensor under DDP.
    assert torch.equal(ddp_state["layers.token_embedder.weight"], ddp_state["layers.final_out.weight"])


def test_ddp_state_dict_loads_in_the_reference(ddp_state):
    assert_loads_in_the_reference(ddp_state, "DDP")


def test_fsdp2_steps_equal_one_process_over_the_global_batch(fsdp2_result, one_process):
    _, expected, names = one_process
    # the parameters really were sharded
    assert not fsdp2_result["not_dtensor"], f"not sharded: {fsdp2_result['not_dtensor']}"
    assert fsdp2_result["local_numel"] < fsdp2_result["full_numel"], (
        f"rank 0 holds {fsdp2_result['local_numel']} of {fsdp2_result['full_numel']} elements")
    params = fsdp2_result["params"]
    assert list(params) == names, "fully_shard: named_parameters differ from the plain model's"
    assert_equal_to_one_process(params, {n: expected[n] for n in names}, "FSDP2 parameters")
    state = fsdp2_result["state"]
    assert_equal_to_one_process(state, expected, "FSDP2 full state_dict")
    # Tied and shared tensors stay one tensor under FSDP2.
    assert torch.equal(state["layers.token_embedder.weight"], state["layers.final_out.weight"])
    assert torch.equal(state["layers.symbol_retrievers.0.symbol_library"],
                       state["layers.symbol_retrievers.1.symbol_library"])


def test_fsdp2_state_dict_loads_in_the_reference(fsdp2_result):
    assert_loads_in_the_reference(fsdp2_result["state"], "FSDP2")


def test_fully_sharded_data_parallel_steps_equal_one_process(fsdp1_result, one_process):
    _, expected, _ = one_process
    assert fsdp1_result["local_numel"] < fsdp1_result["full_numel"], (
        f"rank 0 holds {fsdp1_result['local_numel']} of {fsdp1_result['full_numel']} elements")
    state = fsdp1_result["state"]
    assert_equal_to_one_process(state, expected, "FullyShardedDataParallel full state_dict")
    assert torch.equal(state["layers.token_embedder.weight"], state["layers.final_out.weight"])
    assert_loads_in_the_reference(state, "FullyShardedDataParallel")
