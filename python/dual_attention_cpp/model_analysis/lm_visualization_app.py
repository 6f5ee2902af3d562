"""The local web app of ``dual-attention serve``: generate text from a prompt (tokens streamed as
they come) and see the model's attention scores, relations and symbol assignments on the prompt and
its continuation. No gradio, no internet: the page and the server are part of this package.

Run it with::

    python -m dual_attention_cpp.model_analysis.lm_visualization_app [MODEL] [--host 127.0.0.1] [--port 8080]

MODEL is a model folder or a Hugging Face Hub repo id (default: build/demo/shakespeare-dat, which
scripts/demo.sh trains). ``lm_inference_app`` and ``lm_visualization_app`` start the same app.
"""

from ._app import main, run_app

__all__ = ["run_app", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
