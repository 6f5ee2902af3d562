"""What lm_inference_app and lm_visualization_app share: the server of ``dual-attention serve``."""

from __future__ import annotations

import argparse
from typing import Optional

from .. import _C


def run_app(model: Optional[str] = None, host: str = "127.0.0.1", port: int = 8080,
            tokenizer: Optional[str] = None, quiet: bool = False) -> bool:
    """Serves ``model`` (a folder or Hub repo id; None: the demo model) at http://host:port/ until
    interrupted (Ctrl-C). Returns True when it stopped cleanly."""
    return _C._serve(model or "", host, int(port), tokenizer, bool(quiet))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Serve a language model: a web app for generation and visualization, and an "
                    "OpenAI-compatible API (see docs/model_analysis.md).")
    parser.add_argument("model", nargs="?", default=None,
                        help="model folder or Hugging Face Hub repo id (default: build/demo/shakespeare-dat)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tokenizer", default=None, help="tokenizer file (default: the model's, else GPT-2's)")
    parser.add_argument("--quiet", action="store_true", help="no request log")
    args = parser.parse_args(argv)
    try:
        return 0 if run_app(args.model, args.host, args.port, args.tokenizer, args.quiet) else 1
    except (RuntimeError, ValueError, OSError) as error:
        parser.exit(1, f"error: {error}\n")
