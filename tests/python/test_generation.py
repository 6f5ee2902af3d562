"""Generation from Python: the reference's generate signature (same tokens as the installed reference,
greedy and seeded sampling), the Hugging Face keywords (batches of different lengths, seeds, stop
conditions, log-probabilities), streaming by callable and by iterator, the training flag, the
errors of bad input, and the `dual-attention generate` command (token ids and text)."""

import math
import os
import subprocess
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import torch

import dual_attention_cpp as dac
from bindings_support import GPT2_PATTERN
from dual_attention import language_models as ref_lm
from dual_attention.hf import DualAttnTransformerLM_HFHub

V, D, T = 40, 16, 12
BASE = dict(vocab_size=V, d_model=D, n_layers=2, dff=32, dropout_rate=0.0, activation="swiglu",
            norm_first=True, max_block_size=T)
MODELS = {
    "dat_rope_symbolic": ("DualAttnTransformerLM", dict(
        BASE, n_heads_sa=2, n_heads_ra=2, pos_enc_type="RoPE", ra_kwargs=dict(n_kv_heads=1),
        symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=8))),
    "dat_position_relative": ("DualAttnTransformerLM", dict(
        BASE, n_heads_sa=2, n_heads_ra=2, symbol_retrieval="position_relative",
        symbol_retrieval_kwargs=dict(symbol_dim=D, max_rel_pos=3),
        ra_kwargs=dict(use_relative_positional_symbols=True, rel_activation="tanh"))),
    "dat_positional_symbols": ("DualAttnTransformerLM", dict(
        BASE, n_heads_sa=2, n_heads_ra=2, symbol_retrieval="positional_symbols",
        symbol_retrieval_kwargs=dict(symbol_dim=D, max_length=T))),
    "transformer": ("TransformerLM", dict(BASE, n_heads=4, pos_enc_type="RoPE")),
}


def perturbed(ref):
    """Larger weights than the N(0, 0.02) init, so that greedy steps are decided by wide margins."""
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() >= 2:
                p.mul_(10)
    return ref


def build(case, seed=0):
    name, kwargs = MODELS[case]
    torch.manual_seed(seed)
    ref = perturbed(getattr(ref_lm, name)(**kwargs)).eval()
    mine = getattr(dac, name)(**kwargs).eval()
    mine.load_state_dict(ref.state_dict())
    return ref, mine


@pytest.mark.parametrize("case", sorted(MODELS))
def test_reference_signature_gives_the_references_tokens_past_the_block(case):
    ref, mine = build(case)
    prompt = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref.generate(prompt, 12, top_k=1)  # 17 > max_block_size 12: cropped
        assert torch.equal(mine.generate(prompt, 12, top_k=1), expected)
        # Sampling draws from the global generator as the reference does.
        torch.manual_seed(5)
        expected = ref.generate(prompt, 6, temperature=0.7, top_k=5)
        torch.manual_seed(5)
        assert torch.equal(mine.generate(prompt, 6, temperature=0.7, top_k=5), expected)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_a_list_of_prompts_gives_each_its_own_tokens(case):
    _, mine = build(case)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11] * 15]
    out = mine.generate(prompts, 8, do_sample=False, return_dict_in_generate=True)
    for r, prompt in enumerate(prompts):
        alone = mine.generate([prompt], 8, do_sample=False, return_dict_in_generate=True)
        assert out.tokens[r] == alone.tokens[0]
    # The same batch as a left-padded tensor with an attention mask.
    ids = torch.zeros(3, 15, dtype=torch.long)
    mask = torch.zeros(3, 15, dtype=torch.long)
    for r, prompt in enumerate(prompts):
        ids[r, 15 - len(prompt):] = torch.tensor(prompt)
        mask[r, 15 - len(prompt):] = 1
    padded = mine.generate(ids, 8, do_sample=False, attention_mask=mask, return_dict_in_generate=True)
    assert padded.tokens == out.tokens
    assert padded.sequences.shape == (3, 15 + 8)


def test_seeded_sampling_is_reproducible_and_filters_hold():
    _, mine = build("dat_rope_symbolic")
    prompt = torch.tensor([[1, 2, 3]])
    kw = dict(do_sample=True, temperature=1.3, top_p=0.9, seed=11, return_dict_in_generate=True)
    a, b = mine.generate(prompt, 10, **kw), mine.generate(prompt, 10, **kw)
    assert a.tokens == b.tokens
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(mine.generate(prompt, 10, do_sample=True, generator=g1),
                       mine.generate(prompt, 10, do_sample=True, generator=g2))
    with torch.no_grad():
        logits, _ = mine(prompt)
    top2 = set(torch.topk(logits[0, -1], 2).indices.tolist())
    for seed in range(20):
        out = mine.generate(prompt, 1, do_sample=True, top_k=2, temperature=5.0, seed=seed,
                            return_dict_in_generate=True)
        assert out.tokens[0][0] in top2


def test_eos_stop_sequences_logprobs_and_scores():
    _, mine = build("transformer")
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    free = mine.generate(prompt, 8, do_sample=False, return_dict_in_generate=True, output_scores=True)
    assert free.finish_reasons == ["length"] and len(free.scores) == 8
    with torch.no_grad():
        logits, _ = mine(prompt)
    expected = torch.log_softmax(logits[0, -1], -1)[free.tokens[0][0]].item()
    assert math.isclose(free.logprobs[0, 0].item(), expected, rel_tol=1e-4, abs_tol=1e-5)
    eos = free.tokens[0][2]
    stopped = mine.generate(prompt, 8, do_sample=False, eos_token_id=eos, return_dict_in_generate=True)
    assert stopped.finish_reasons == ["eos"]
    assert stopped.tokens[0] == free.tokens[0][: free.tokens[0].index(eos) + 1]
    stop = free.tokens[0][1:3]
    by_stop = mine.generate(prompt, 8, do_sample=False, stop_sequences=[stop], return_dict_in_generate=True)
    assert by_stop.finish_reasons == ["stop"] and by_stop.tokens[0][-2:] == stop


def test_streaming_by_callable_and_by_iterator():
    _, mine = build("dat_position_relative")
    prompt = torch.tensor([[2, 7, 1]])
    full = mine.generate(prompt, 6, do_sample=False, return_dict_in_generate=True)
    seen = []
    mine.generate(prompt, 6, do_sample=False, streamer=lambda step: seen.append(step.tokens[0]))
    assert seen == full.tokens[0]
    assert [step.tokens[0] for step in mine.stream(prompt, 6, do_sample=False)] == full.tokens[0]
    # Leaving the loop early ends the generation; a streamer returning False stops it.
    for step in mine.stream(prompt, 6, do_sample=False):
        if step.index == 1:
            break
    out = mine.generate(prompt, 6, do_sample=False, streamer=lambda step: step.index < 2,
                        return_dict_in_generate=True)
    assert out.tokens[0] == full.tokens[0][:3] and out.finish_reasons == ["callback"]


def test_generation_keeps_the_training_flag_and_grad_mode():
    _, mine = build("transformer")
    mine.train()
    with torch.no_grad():
        mine.generate(torch.tensor([[1, 2]]), 2, do_sample=False)
    assert mine.training and all(m.training for m in mine.modules())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), ["is empty; expected at least one token"]),
        (dict(idx=[[1, 40]]), ["[0, 40)", "40"]),
        (dict(idx=[[1, 2]], temperature=-1.0, do_sample=True), ["temperature", "-1"]),
        (dict(idx=[[1, 2]], top_p=0.0), ["top_p", "0"]),
        (dict(idx=[[1, 2]], top_p=1.5), ["top_p", "1.5"]),
        (dict(idx=[[1, 2]], top_k=0, do_sample=True), ["top_k", "0"]),
        (dict(idx=[[1, 2]], max_new_tokens=-1, do_sample=False), ["max_new_tokens", "-1"]),
        (dict(idx=[[]], do_sample=False), ["prompt 0 is empty"]),
    ],
    ids=["empty-prompt", "id-out-of-range", "negative-temperature", "top-p-zero", "top-p-above-one",
         "top-k-zero", "negative-max-new-tokens", "empty-row"],
)
def test_bad_input_is_named(kwargs, words):
    _, mine = build("transformer")
    kwargs = dict(kwargs)
    idx = kwargs.pop("idx")
    max_new = kwargs.pop("max_new_tokens", 3)
    kwargs.setdefault("return_dict_in_generate", True)
    with pytest.raises((RuntimeError, ValueError)) as error:
        mine.generate(idx, max_new, **kwargs)
    for word in words:
        assert word in str(error.value)


# ---- the `dual-attention generate` command ---------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / os.environ.get("BUILD_DIR", "build") / "tools" / "dual-attention"
GPT2_VOCAB = 50257


def run_cli(*args):
    return subprocess.run([str(CLI), "generate", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def saved_reference(folder, vocab_size=V):
    """A perturbed reference DAT LM saved by the reference's own save_pretrained."""
    kwargs = dict(MODELS["dat_rope_symbolic"][1], vocab_size=vocab_size)
    torch.manual_seed(0)
    ref = perturbed(DualAttnTransformerLM_HFHub(**kwargs)).eval()
    ref.save_pretrained(str(folder))
    return ref


def test_cli_prompt_ids_print_the_references_greedy_tokens(tmp_path):
    ref = saved_reference(tmp_path / "m")
    prompt = [3, 1, 4, 1, 5]
    with torch.no_grad():
        expected = ref.generate(torch.tensor([prompt]), 10, top_k=1)[0, len(prompt):].tolist()
    done = run_cli(tmp_path / "m", "--prompt-ids", "3,1,4,1,5", "--max-new-tokens", 10)
    assert done.returncode == 0, done.stderr
    assert [int(t) for t in done.stdout.split()] == expected
    assert "tokens/s" in done.stderr


def test_cli_prompt_text_is_tokenized_and_the_continuation_decoded(tmp_path):
    ranks = Path(os.environ.get("DUAL_ATTENTION_DATA_DIR") or
                 Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) /
                 "dual-attention") / "gpt2.tiktoken"
    assert ranks.exists(), f"{ranks} is missing: run scripts/fetch_data.sh (setup.sh does)"
    tk = tiktoken.Encoding(
        name="gpt2", mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(ranks)),
        pat_str=GPT2_PATTERN,
        special_tokens={"<|endoftext|>": 50256})
    ref = saved_reference(tmp_path / "m", vocab_size=GPT2_VOCAB)
    text = "To be, or not to be"
    prompt = tk.encode_ordinary(text)
    with torch.no_grad():
        new = ref.generate(torch.tensor([prompt]), 8, top_k=1)[0, len(prompt):].tolist()
    if 50256 in new:  # the command stops at GPT-2's end-of-text token
        new = new[:new.index(50256) + 1]
    expected = text + tk.decode([t for t in new if t != 50256])
    done = run_cli(tmp_path / "m", "--prompt", text, "--max-new-tokens", 8, "--tokenizer", ranks)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --prompt TEXT and --prompt-ids IDS"),
    (["--prompt", "a", "--prompt-ids", "1"], "give exactly one of --prompt TEXT and --prompt-ids"),
    (["--prompt-ids", "1,x"], "--prompt-ids: expected integer token ids"),
    (["--prompt-ids", "1", "--tokenizer", "t.json"], "--tokenizer is for --prompt TEXT"),
    (["--prompt-ids", "99"], "99"),
    (["--prompt-ids", "1", "--temperature", "-1"], "temperature"),
])
def test_cli_bad_arguments_are_named(tmp_path, args, message):
    saved_reference(tmp_path / "m")
    done = run_cli(tmp_path / "m", *args)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
