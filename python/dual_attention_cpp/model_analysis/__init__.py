"""Looking inside a model (the reference's ``dual_attention.model_analysis``): forwards that return
the attention weights, relations and symbol assignments of every layer (``datlm_utils``; the seq2seq and vision models in ``seq2seq_utils``), the views
of ``dual-attention viz`` as HTML for notebooks (``views``), and the local web app of
``dual-attention serve`` (``lm_inference_app``, ``lm_visualization_app``; no gradio needed)."""

from . import datlm_utils, seq2seq_utils, views
from .datlm_utils import (
    block_forward_get_weights,
    datlm_forward_w_intermediate_results,
    symbolic_attn_forward_get_weights,
    transformerlm_forward_w_intermediate_results,
)
from .seq2seq_utils import (
    seq2seq_dat_forward_w_intermediate_results,
    seq2seq_forward_w_intermediate_results,
    vidat_forward_w_intermediate_results,
    vit_forward_w_intermediate_results,
)
from .views import display_visualization, visualization_html, visualization_payload

__all__ = [
    "datlm_forward_w_intermediate_results",
    "transformerlm_forward_w_intermediate_results",
    "symbolic_attn_forward_get_weights",
    "block_forward_get_weights",
    "seq2seq_forward_w_intermediate_results",
    "seq2seq_dat_forward_w_intermediate_results",
    "vit_forward_w_intermediate_results",
    "vidat_forward_w_intermediate_results",
    "visualization_payload",
    "visualization_html",
    "display_visualization",
]
