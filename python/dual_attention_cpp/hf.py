"""The language models with the checkpoint interface of huggingface_hub's PyTorchModelHubMixin
(reference: ``dual_attention.hf``): ``from_pretrained`` / ``save_pretrained`` of folders holding
``config.json`` and ``model.safetensors``. Every model class of the package has both; these names
exist so that code importing them runs unchanged."""

from .language_models import DualAttnTransformerLM, TransformerLM

__all__ = ["DualAttnTransformerLM_HFHub", "TransformerLM_HFHub"]


class DualAttnTransformerLM_HFHub(DualAttnTransformerLM):
    __doc__ = DualAttnTransformerLM.__doc__


class TransformerLM_HFHub(TransformerLM):
    __doc__ = TransformerLM.__doc__
