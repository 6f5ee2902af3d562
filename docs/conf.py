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

# Every cross-reference must resolve ({cpp:class}`...`, {py:class}`...`, the types in signatures),
# except the types of the libraries underneath, which have no pages here.
nitpicky = True
nitpick_ignore_regex = [
    (r"cpp:.*", r"(std|torch|c10|c10d|at|nlohmann|pybind11)(::.*)?"),
    (r"cpp:.*", r"u?int\d+_t|size_t|Derived|Options|T|Visitor"),
    # Kwargs is nlohmann::json (Kwargs::object() is its static member); detail:: holds private
    # implementation types (MappedFile, TokenizerImpl) that the headers only declare.
    (r"cpp:.*", r"Kwargs::.*|detail::.*"),
    (r"py:.*", r"(torch|typing|collections|numpy|pathlib|os)(\..*)?"),
    (r"py:.*", r"Tensor|Optional|Tuple|List|Dict|Any|Union|Callable|Sequence|Module|Parameter"),
    # NumPy-style docstrings: "n_relations : int, optional".
    (r"py:class", r"optional|default.*|callable"),
]

# Breathe over Doxygen's XML of include/dual_attention.
breathe_projects = {"dual_attention": os.environ.get("DOXYGEN_XML", str(ROOT / "build/docs/doxygen/xml"))}
breathe_default_project = "dual_attention"
breathe_default_members = ("members",)
# Its "#include <attention.h>" lines would name the header without its folder, and link to file
# pages the site does not have; api/cpp.md says what to include.
breathe_show_include = False
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

# Formulas are typeset in the browser by MathJax 3 from Sphinx's default CDN address (offline, the
# TeX source shows). Debian's MathJax 2 (libjs-mathjax) did not typeset these pages in headless
# Chromium, so it is not used.

html_theme = "furo"
html_title = "dual-attention-cpp"
html_static_path = []
pygments_style = "friendly"
