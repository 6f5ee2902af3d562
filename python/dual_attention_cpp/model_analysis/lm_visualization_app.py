"""The reference's other name for the app of ``lm_inference_app`` (the local web app of
``dual-attention serve``); both start the same app, with the same arguments::

    python -m dual_attention_cpp.model_analysis.lm_visualization_app [MODEL] [--host 127.0.0.1] [--port 8080]
"""

from ._app import main, run_app

__all__ = ["run_app", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
