"""Decoder-only language models: the Dual Attention Transformer LM and a Transformer LM baseline (the
C++ ``language_models.h``; reference: ``dual_attention.language_models``)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import _C
from ._module import PretrainedModel

# GenerationOutput and GenerationStep (below) are importable from here too; they stay out of
# __all__, whose classes python/gen_stubs.py stubs as modules.
__all__ = ["DualAttnTransformerLM", "TransformerLM", "configure_optimizers"]


@dataclass
class GenerationStep:
    """What a streamer sees after each step (C++ ``GenerationStep``)."""

    index: int  #: 0 for the first new token
    tokens: List[int]  #: the new token of each row; -1 for a row that had stopped
    logprobs: List[float]  #: log-probability of each new token (nan for stopped rows)
    finished: List[bool]  #: whether the row stops with this token (or had stopped)


@dataclass
class GenerationOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns (C++ ``GenerationOutput``)."""

    sequences: torch.Tensor  #: [b, prompt_len + steps] left-padded prompts and new tokens
    tokens: List[List[int]]  #: each row's new tokens, up to and including its eos / stop sequence
    logprobs: torch.Tensor  #: [b, steps] float32 log-probability of each new token (nan after a stop)
    scores: Optional[List[torch.Tensor]]  #: output_scores: per step [b, vocab] log-probabilities
    finish_reasons: List[str]  #: "length", "eos", "stop" or "callback" per row


_UNSET: Any = object()


def _check_token_ids(ids: torch.Tensor, vocab_size: int, owner: str, argument: str = "idx") -> None:
    """``ids`` (``idx``, or ``targets`` where -1 is also allowed) must be integer ids
    ``[batch, len]`` in ``[0, vocab_size)``. The range is checked in eager mode only: it reads the
    values (a sync), which torch.compile and torch.export cannot trace; there an out-of-range id
    fails in the embedding or the loss instead."""
    if ids.dim() != 2:
        raise RuntimeError(
            f"{owner}: {argument} must be token ids of shape [batch, seq_len], got shape "
            f"{list(ids.shape)}"
        )
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise RuntimeError(
            f"{owner}: {argument} must hold integer token ids, got dtype {ids.dtype}"
        )
    if ids.numel() == 0:
        raise RuntimeError(f"{owner}: {argument} must not be empty, got shape {list(ids.shape)}")
    if torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()
    if argument == "targets" and (lo < -1 or hi >= vocab_size):
        raise RuntimeError(
            f"{owner}: targets must be in [0, {vocab_size}) or -1 (ignored), got values from {lo} "
            f"to {hi}"
        )
    if argument != "targets" and (lo < 0 or hi >= vocab_size):
        raise RuntimeError(
            f"{owner}: token ids must be in [0, {vocab_size}) (vocab_size {vocab_size}), got ids "
            f"from {lo} to {hi}"
        )


class _LanguageModel(PretrainedModel):
    def forward(
        self, x: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next-token logits for the token ids ``x`` ``[batch, len]`` (``len <= max_block_size``).

        Returns ``(logits [batch, len, vocab_size], loss)``: the mean cross-entropy against
        ``targets`` ``[batch, len]`` (-1 is ignored), or None without targets.
        """
        owner = self._get_name()
        _check_token_ids(x, self.vocab_size, owner)
        t = x.shape[1]
        if t > self.max_block_size:
            raise RuntimeError(
                f"{owner}: input sequence length {t} exceeds max_block_size {self.max_block_size}"
            )
        layers = self.layers
        h = layers.token_embedder(x)  # [b, t, d]
        if self.pos_enc_type == "RoPE":
            freqs_cos, freqs_sin = self.freqs_cos[:t], self.freqs_sin[:t]  # [t, head_dim / 2]
        else:
            positions = torch.arange(t, device=x.device)  # [t]
            h = h + layers.positional_embedder(positions)  # [b, t, d]
            freqs_cos = freqs_sin = None
        if "symbol_retrievers" in layers:  # DualAttnTransformerLM
            for symbol_retriever, block in zip(layers.symbol_retrievers, layers.blocks):
                symbols = symbol_retriever(h)  # [b, t, d] (position-relative: [t, t, d])
                h = block(h, symbols, freqs_cos=freqs_cos, freqs_sin=freqs_sin)  # [b, t, d]
        else:  # TransformerLM; without flash attention, the explicit-weights path
            need_weights = not self.use_flash_attention
            for block in layers.blocks:
                h = block(h, freqs_cos=freqs_cos, freqs_sin=freqs_sin, need_weights=need_weights)
        logits = layers.final_out(layers.norm(h))  # [b, t, vocab_size]
        if targets is None:
            return logits, None
        if tuple(targets.shape) != tuple(x.shape):
            raise RuntimeError(
                f"{owner}: targets must have the shape of idx {list(x.shape)}, got "
                f"{list(targets.shape)}"
            )
        _check_token_ids(targets, self.vocab_size, owner, "targets")
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-1
        )
        return logits, loss

    def generate(
        self,
        idx: Union[torch.Tensor, Sequence[Sequence[int]]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        *,
        do_sample: Optional[bool] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        eos_token_id: Union[int, Sequence[int], None] = None,
        stop_sequences: Optional[Sequence[Sequence[int]]] = None,
        pad_token_id: Optional[int] = None,
        attention_mask: Optional[torch.Tensor] = None,
        use_cache: bool = True,
        output_scores: bool = False,
        streamer: Optional[Callable[[GenerationStep], Optional[bool]]] = None,
        return_dict_in_generate: bool = False,
    ) -> Union[torch.Tensor, GenerationOutput]:
        """Appends up to ``max_new_tokens`` tokens to ``idx`` ``[batch, len]``.

        Called as the reference's ``generate(idx, max_new_tokens, temperature=1.0, top_k=None)`` it
        keeps its semantics: each token is sampled (``torch.multinomial``, the global generator) from
        the softmax of the last position's logits divided by ``temperature``, restricted to the
        ``top_k`` largest when given (``top_k=1`` is greedy); the context is cropped to the last
        ``max_block_size`` tokens; returns ``[batch, len + max_new_tokens]``. It runs on a KV cache
        whose logits equal the full forward's.

        The keywords after ``*`` are Hugging Face ``generate``'s (C++ ``GenerationConfig``):

        - ``do_sample`` (default: True, the reference's behaviour; False is greedy),
          ``temperature`` (0 is greedy), ``top_k``, ``top_p`` (in (0, 1]), ``min_p`` (in [0, 1]),
          ``repetition_penalty`` (1 = off);
        - ``seed`` (a private generator: reproducible) or ``generator`` (a CPU ``torch.Generator``);
        - ``eos_token_id`` (one id or several) and ``stop_sequences`` (token-id sequences): a row
          stops after producing one (it is part of its output); ``pad_token_id`` fills the rest
          (default: the first eos id, else 0);
        - ``idx`` may be a list of prompts of different lengths, or a left-padded tensor with
          ``attention_mask`` (1 = token, 0 = padding); each row gets the tokens it gets alone;
        - ``streamer``: called with a :class:`GenerationStep` after each step; returning False
          stops generation (see also :meth:`stream`);
        - ``use_cache=False`` recomputes the whole context each step (the reference's way);
        - ``output_scores`` adds each step's log-probabilities to the result;
        - ``return_dict_in_generate`` returns a :class:`GenerationOutput` instead of the sequences.

        Runs without gradients and leaves the training flag as it is; call ``eval()`` first.
        Bad arguments raise RuntimeError naming the argument and the value.
        """
        extras = (
            do_sample, top_p, min_p, seed, generator, eos_token_id, stop_sequences, pad_token_id,
            attention_mask, streamer,
        )
        plain = (
            all(e is None for e in extras)
            and repetition_penalty == 1.0
            and use_cache
            and not output_scores
            and not return_dict_in_generate
            and isinstance(idx, torch.Tensor)
        )
        cpp = self._twin("generate", required=False)
        if cpp is None:
            # A module tree the C++ model cannot stand for (a wrapped or quantized layer, a
            # parametrization, a hook, sharded parameters): generate with its Python forward.
            return _generate_with_forward(
                self, idx, max_new_tokens, temperature, top_k, do_sample, seed, generator,
                extras=dict(
                    top_p=top_p, min_p=min_p, eos_token_id=eos_token_id,
                    stop_sequences=stop_sequences, pad_token_id=pad_token_id,
                    attention_mask=attention_mask, streamer=streamer,
                    repetition_penalty=None if repetition_penalty == 1.0 else repetition_penalty,
                    use_cache=None if use_cache else use_cache,
                    output_scores=output_scores or None,
                    return_dict_in_generate=return_dict_in_generate or None,
                ),
            )
        if plain:
            with torch.no_grad():
                return cpp.generate(idx, max_new_tokens, temperature, top_k)
        prompts = _prompts(idx, attention_mask)
        if isinstance(eos_token_id, int):
            eos_token_id = [eos_token_id]
        callback = None
        if streamer is not None:

            def callback(index, tokens, logprobs, finished):
                go_on = streamer(GenerationStep(index, tokens, logprobs, finished))
                return go_on is None or bool(go_on)

        sequences, tokens, logprobs, scores, reasons = cpp._generate(
            prompts, max_new_tokens, True if do_sample is None else do_sample, temperature, top_k,
            top_p, min_p, repetition_penalty, seed, generator, list(eos_token_id or []),
            [list(s) for s in (stop_sequences or [])], pad_token_id, use_cache, output_scores,
            callback,
        )
        device = idx.device if isinstance(idx, torch.Tensor) else next(self.parameters()).device
        sequences = sequences.to(device)
        if not return_dict_in_generate:
            return sequences
        return GenerationOutput(sequences, tokens, logprobs, scores if output_scores else None, reasons)

    def stream(
        self, idx: Union[torch.Tensor, Sequence[Sequence[int]]], max_new_tokens: int, **kwargs: Any
    ) -> Iterator[GenerationStep]:
        """:meth:`generate` as an iterator of :class:`GenerationStep`, one per step, with the same
        arguments (``streamer`` excepted). Leaving the loop early stops the generation."""
        if "streamer" in kwargs:
            raise TypeError("stream() takes no streamer; iterate over it instead")
        steps: "queue.Queue" = queue.Queue(maxsize=1)
        stopped = threading.Event()
        done = object()
        failure: List[BaseException] = []

        def put(step: GenerationStep) -> bool:
            while not stopped.is_set():
                try:
                    steps.put(step, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                self.generate(idx, max_new_tokens, streamer=put, **kwargs)
            except BaseException as error:  # reported to the consumer
                failure.append(error)
            finally:
                while True:
                    try:
                        steps.put(done, timeout=0.05)
                        break
                    except queue.Full:
                        if stopped.is_set():
                            break

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while True:
                item = steps.get()
                if item is done:
                    break
                yield item
        finally:
            stopped.set()
            while worker.is_alive():
                try:
                    steps.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()
        if failure:
            raise failure[0]

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors once); ``non_embedding`` leaves out the positional
        embedding."""
        n = sum(p.numel() for p in self.parameters())
        positional = getattr(self.layers, "positional_embedder", None)
        if non_embedding and isinstance(positional, nn.Embedding):
            n -= positional.weight.numel()
        return n

    def estimate_mfu(self, fwdbwd_per_iter, dt) -> int:
        """A placeholder, as in the reference: returns -1."""
        return -1


def _prompts(idx: Union[torch.Tensor, Sequence[Sequence[int]]], attention_mask: Optional[torch.Tensor]) -> List[List[int]]:
    """The prompts as lists of token ids (left padding removed by the attention mask)."""
    if not isinstance(idx, torch.Tensor):
        if attention_mask is not None:
            raise ValueError("attention_mask goes with a tensor idx; a list of prompts needs none")
        return [[int(t) for t in row] for row in idx]
    if idx.dim() != 2:
        raise ValueError(f"generate: idx must be token ids of shape [batch, seq_len], got shape {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"generate: idx must hold integer token ids, got dtype {idx.dtype}")
    rows = idx.tolist()
    if attention_mask is None:
        return rows
    if tuple(attention_mask.shape) != tuple(idx.shape):
        raise ValueError(
            f"generate: attention_mask must have the shape of idx {tuple(idx.shape)}, got {tuple(attention_mask.shape)}"
        )
    prompts = []
    for r, (row, mask) in enumerate(zip(rows, attention_mask.tolist())):
        first = next((j for j, m in enumerate(mask) if m), len(mask))
        if any(m != 1 for m in mask[first:]) or any(m != 0 for m in mask[:first]):
            raise ValueError(
                f"generate: attention_mask row {r} is not left padding (0s then 1s), got {mask}"
            )
        prompts.append(row[first:])
    return prompts


class DualAttnTransformerLM(_LanguageModel, cpp=_C.DualAttnTransformerLM):
    """Dual Attention Transformer language model: token embedding, a stack of causal
    ``DualAttnEncoderBlock`` layers fed by a symbol retriever, a final norm and an output layer
    tied to the token embedding.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size.
    d_model : int
        Model dimension.
    n_layers : int
        Number of layers.
    n_heads_sa : int
        Self-attention heads of each dual attention layer.
    n_heads_ra : int
        Relational heads of each dual attention layer.
    symbol_retrieval_kwargs : dict
        Keywords of the symbol retriever.
    dff : int
        Hidden width of the feed-forward blocks (None: their default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward blocks (an activation name, or 'swiglu').
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    max_block_size : int
        Longest input (context length).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    sa_kwargs : dict, optional
        Keywords of the self-attention heads.
    ra_kwargs : dict, optional
        Keywords of the relational heads.
    ra_type : str, optional
        'relational_attention' (default), 'rca' or 'disrca'.
    share_attn_params : bool, optional
        Share the attention query/key projections of both kinds of heads. Default False.
    symbol_retrieval : str, optional
        'symbolic_attention' (default), 'positional_symbols' or 'position_relative'.
    symbol_retriever_config : dict, optional
        ``{'shared_symbol_retriever': bool, 'weight_tie_symbol_library': bool}``: one retriever for
        all layers (default), or one per layer, optionally sharing one symbol library.
    pos_enc_type : str, optional
        'pos_emb' (learned positional embedding, default) or 'RoPE'.
    bias : bool, optional
        Stored; unused, as in the reference. Default True.
    """


class TransformerLM(_LanguageModel, cpp=_C.TransformerLM):
    """Transformer language model, the baseline of the Dual Attention Transformer LM.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size.
    d_model : int
        Model dimension.
    n_layers : int
        Number of layers.
    n_heads : int
        Attention heads of each layer.
    dff : int
        Hidden width of the feed-forward blocks (None: their default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward blocks (an activation name, or 'swiglu').
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    max_block_size : int
        Longest input (context length).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias of the attention output projections and feed-forward layers. Default True.
    pos_enc_type : str, optional
        'pos_emb' (default) or 'RoPE'.
    use_flash_attention : bool, optional
        False computes attention on the explicit-weights path. Default True.
    block_kwargs : dict, optional
        Extra keywords of the encoder blocks (e.g. ``attn_kwargs``).
    """


def configure_optimizers(model: nn.Module, weight_decay: float, learning_rate: float, betas, device_type: str):
    """``torch.optim.AdamW`` over the model's trainable parameters in two groups: tensors of
    dimension >= 2 (matmul weights, embeddings) decay by ``weight_decay``, the others do not; fused
    when ``device_type == 'cuda'``. The grouping is the C++ library's; ``model`` must be a module
    of this package (or any module: the rule reads only the parameters' dimensions)."""
    # The reference's rule, as the C++ configure_optimizers applies it.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    decay, nodecay = groups[0]["params"], groups[1]["params"]
    print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
    print(f"num non-decayed parameter tensors: {len(nodecay)}, with {sum(p.numel() for p in nodecay):,} parameters")
    use_fused = device_type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=use_fused)
    print(f"using fused AdamW: {use_fused}")
    return optimizer


def _generate_with_forward(model, idx, max_new_tokens, temperature, top_k, do_sample, seed,
                           generator, extras) -> torch.Tensor:
    """The reference's generation loop over ``model(context)``: for a module tree that the C++
    model cannot stand for. Greedy or sampled with temperature and top_k; the context is cropped to
    the last ``max_block_size`` tokens; no cache."""
    unsupported = sorted(name for name, value in extras.items() if value is not None)
    if unsupported:
        problem = model._twin_problem()
        raise NotImplementedError(
            f"generate({', '.join(unsupported)}=...) runs on the C++ model, which cannot stand "
            f"for this module ({problem}); without it generate supports the reference's arguments "
            "(idx as a tensor, max_new_tokens, temperature, top_k) and do_sample, seed, generator"
        )
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        raise ValueError("generate: idx must be token ids of shape [batch, seq_len]")
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(int(seed))
    greedy = do_sample is False or temperature == 0
    block = model.max_block_size
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(idx[:, -block:])
            logits = logits[:, -1, :]
            if greedy:
                token = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat((idx, token), dim=1)
    return idx
