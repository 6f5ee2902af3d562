"""The views of ``dual-attention viz`` from Python: a self-contained HTML page (head view, model
view and symbol assignment of the attention scores and relations), for files and notebooks.
See docs/model_analysis.md for what the page shows and how its data is quantised."""

from __future__ import annotations

import html as _html
import json
from typing import Optional, Sequence

from .. import _C
from .._module import CppModule

__all__ = ["visualization_payload", "visualization_html", "display_visualization"]


def _default_tokenizer():
    try:  # the library's own GPT-2 tokenizer, when this build has it
        from .. import tokenizer as _tokenizer  # type: ignore[attr-defined]

        return _tokenizer.get_encoding("gpt2")
    except ImportError:
        import tiktoken

        return tiktoken.get_encoding("gpt2")


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")


def visualization_payload(model, text: Optional[str] = None, *, token_ids: Optional[Sequence[int]] = None,
                          tokenizer=None, tokens: Optional[Sequence[str]] = None,
                          n_prompt: Optional[int] = None, name: str = "model",
                          top_symbols: int = 4) -> dict:
    """The data of the views (a dict, format in docs/model_analysis.md) for a
    ``DualAttnTransformerLM`` or ``TransformerLM`` of this package on ``text`` (encoded with
    ``tokenizer``: any object with ``encode`` and ``decode_single_token_bytes``, such as a tiktoken
    Encoding; default GPT-2's) or on ``token_ids``. ``tokens`` gives the text shown for each token
    (default: the tokenizer's, or the ids); the first ``n_prompt`` tokens (default all) are shown as
    the prompt, the rest as generated."""
    if not isinstance(model, CppModule) or type(model).__name__ not in ("DualAttnTransformerLM", "TransformerLM"):
        raise TypeError(f"model must be a dual_attention_cpp DualAttnTransformerLM or TransformerLM, got {type(model).__name__}")
    if (text is None) == (token_ids is None):
        raise ValueError("give exactly one of text and token_ids")
    if text is not None:
        tokenizer = tokenizer or _default_tokenizer()
        ids = list(tokenizer.encode(text))
    else:
        ids = [int(i) for i in token_ids]
    if tokens is None:
        tokens = [_token_text(tokenizer, i) for i in ids] if tokenizer is not None else [str(i) for i in ids]
    if len(tokens) != len(ids):
        raise ValueError(f"tokens has {len(tokens)} strings for {len(ids)} token ids")
    model.eval()
    return json.loads(_C._viz_payload(model._twin("the visualization"), ids, list(tokens),
                                      len(ids) if n_prompt is None else int(n_prompt), name, top_symbols))


def visualization_html(model, text: Optional[str] = None, *, title: Optional[str] = None, **kwargs) -> str:
    """The self-contained HTML page of the views (what ``dual-attention viz`` writes); arguments as
    ``visualization_payload``. Write it to a file and open it in a browser, offline."""
    payload = visualization_payload(model, text, **kwargs)
    return _C._viz_html(json.dumps(payload), title or payload["model"])


def display_visualization(model, text: Optional[str] = None, *, height: int = 800, **kwargs):
    """The views in a Jupyter notebook: an ``IPython.display.HTML`` holding the page in an iframe
    (so that several can be shown in one notebook)."""
    from IPython.display import HTML

    page = visualization_html(model, text, **kwargs)
    return HTML(f'<iframe srcdoc="{_html.escape(page, quote=True)}" style="width: 100%; height: {height}px; '
                'border: 0"></iframe>')
