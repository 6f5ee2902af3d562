"""Our modules under torch.distributed's DistributedDataParallel: 2 processes, gloo on loopback,
1 thread each (issue 15's Python part; FSDP needs the modules of issue 14 and is not tested here).

After k SGD steps on a DAT LM with a tied embedding, a shared symbol retriever and
share_attn_params, the parameters equal one process's over the same global batch within 1e-6
relative in float32 (SGD: Adam's division amplifies float noise in near-zero gradients). Rank 0's
state_dict loads in the reference and gives our logits."""

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import dual_attention_cpp as dac
from dual_attention import language_models as ref_lm

V, D, T = 48, 16, 12
CONFIG = dict(vocab_size=V, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2, dff=32,
              dropout_rate=0.0, activation="swiglu", norm_first=True, max_block_size=T,
              pos_enc_type="RoPE", share_attn_params=True,
              symbol_retrieval="symbolic_attention",
              symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8))
WORLD, STEPS, GLOBAL_BATCH, LR = 2, 3, 4, 0.5


def model_and_batches():
    torch.manual_seed(0)
    model = dac.DualAttnTransformerLM(**CONFIG)
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


def worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model, batches = model_and_batches()
        ddp = DistributedDataParallel(model)
        train(ddp, batches, rank, WORLD)
        if rank == 0:
            tmp = out + ".tmp"
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
            os.replace(tmp, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_state(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp") / "rank0.pt")
    mp.start_processes(worker, args=(free_port(), out), nprocs=WORLD, join=True,
                       start_method="spawn")
    return torch.load(out)


def test_ddp_steps_equal_one_process_over_the_global_batch(ddp_state):
    torch.set_num_threads(1)
    model, batches = model_and_batches()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, batches)
    expected = model.state_dict()
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
    ref = ref_lm.DualAttnTransformerLM(**CONFIG).eval()
    ref.load_state_dict(ddp_state)
    ours = dac.DualAttnTransformerLM(**CONFIG).eval()
    ours.load_state_dict(ddp_state)
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_logits, _ = ref(idx, idx)
        logits, _ = ours(idx, idx)
    assert (logits - ref_logits).abs().max().item() <= 1e-5 * max(1.0, ref_logits.abs().max().item())
