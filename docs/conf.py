# Sphinx configuration of the documentation site; scripts/docs.sh builds it into build/docs/html.
#
# Pages are Markdown (MyST), so they read the same on GitHub. The C++ API reference comes from the
# headers through Doxygen's XML and Breathe (docs/Doxyfile, DOXYGEN_XML); the Python API reference
# from the built package through autodoc (dual_attention_cpp must be importable:
# PYTHONPATH=build/python).
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

project = "dual-attention-cpp"
author = "dual-attention-cpp authors"
copyright = "2026, dual-attention-cpp authors (MIT licence)"

extensions = [
    "myst_parser",
    "breathe",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Doxyfile", "doxygen_filter.py", "plot_benchmarks.py"]

# MyST: $...$ and $$...$$ maths (as GitHub renders them), ::: fences, heading anchors for links
# such as concepts.md#relational-attention.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Breathe over Doxygen's XML of include/dual_attention.
breathe_projects = {"dual_attention": os.environ.get("DOXYGEN_XML", str(ROOT / "build/docs/doxygen/xml"))}
breathe_default_project = "dual_attention"
breathe_default_members = ("members",)
breathe_show_include = True
cpp_index_common_prefix = ["dual_attention::"]
# Breathe's doxygenfile declares the enclosing namespace again for every header (one directive per
# header in api/cpp.md), which Sphinx reports as a duplicate declaration of `dual_attention`.
suppress_warnings = ["duplicate_declaration.cpp"]

# autodoc: the package built in build/python (scripts/docs.sh puts it on PYTHONPATH).
sys.path.insert(0, str(ROOT / "build/python"))
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_numpy_docstring = True
napoleon_google_docstring = False

# An offline copy of MathJax when Debian's libjs-mathjax is installed (the site then renders its
# formulas without a network); otherwise Sphinx's default CDN copy.
_local_mathjax = Path("/usr/share/javascript/mathjax/MathJax.js")
if _local_mathjax.exists():
    mathjax_path = _local_mathjax.as_uri() + "?config=TeX-AMS-MML_HTMLorMML"

html_theme = "furo"
html_title = "dual-attention-cpp"
html_static_path = []
pygments_style = "friendly"
