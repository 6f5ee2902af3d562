"""Every code block in README.md and docs/ runs as written (issues #10 and #17).

The conventions, documented for writers in docs/writing_docs.md:

- ``python`` blocks run. The blocks of one page run in order in one fresh interpreter (a page reads
  like a notebook: a later block may use what an earlier one defined), in an empty temporary
  folder, with the built package on PYTHONPATH.
- ``cpp`` blocks are compiled, all of them into one translation unit (each torch translation unit
  costs ~40 s of CPU), with the flags CMake uses for the example programs, ``-Werror`` added. Each
  block is a whole program: its ``#include`` lines are hoisted to the top, the rest goes into a
  namespace of its own, and its ``int main()`` runs in a process of its own in an empty folder.
- A line that needs the Hugging Face Hub (these machines cannot reach it) ends with the comment
  ``# needs the Hub`` (Python) or ``// needs the Hub`` (C++). It is compiled but not run: the test
  puts it under ``if False:`` / ``if (false) {}``. Nothing after it may use what it defines.
- ``sh`` blocks are shell commands that build, install or benchmark (minutes each, or the test
  suite itself): they are checked with ``bash -n``, and every repository path they name
  (``scripts/...``, ``benchmarks/...``, ``examples/...``, ``tools/...``) must exist.
- ``cmake`` blocks are what a downstream project writes; each of their commands must appear in
  examples/downstream/CMakeLists.txt, which the C++ suite builds against an installed copy.
- ``text`` blocks are output (pasted from real runs) or layouts; they do not run. MyST directives
  (```` ```{name} ````) are Sphinx's business. Any other language is an error, so that no block is
  skipped by accident.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
LANGUAGES = {"python", "cpp", "sh", "cmake", "text"}
HUB_MARK = {"python": "# needs the Hub", "cpp": "// needs the Hub"}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def extract_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (fences inside fences are content)."""
    blocks = []
    lines = page.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, info = m["fence"], len(m["indent"]), m["info"].strip()
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^ *{re.escape(fence)}{fence[0]}*\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        assert j < len(lines), f"{page.relative_to(ROOT)}:{i + 1}: code fence is never closed"
        if not info.startswith("{"):  # MyST directives are not code
            blocks.append(Block(page, i + 1, info.split()[0] if info else "", "\n".join(body)))
        i = j + 1
    return blocks


BLOCKS = [b for page in PAGES for b in extract_blocks(page)]


def by_language(language: str) -> list[Block]:
    return [b for b in BLOCKS if b.language == language]


def mark_hub_lines(block: Block) -> str:
    """The block's code with each `needs the Hub` line compiled but never run."""
    mark = HUB_MARK[block.language]
    out = []
    for line in block.code.split("\n"):
        if line.rstrip().endswith(mark):
            indent = line[: len(line) - len(line.lstrip())]
            if block.language == "python":
                out.append(f"{indent}if False:  # needs the Hub: compiled, not run")
                out.append(f"{indent}    {line.strip()}")
            else:
                out.append(f"{indent}if (false) {{  // needs the Hub: compiled, not run")
                out.append(f"{indent}  {line.strip()}")
                out.append(f"{indent}}}")
        else:
            out.append(line)
    return "\n".join(out)


def test_every_block_has_a_known_language():
    unknown = [f"{b.where}: {b.language or '(none)'}" for b in BLOCKS if b.language not in LANGUAGES]
    assert not unknown, (
        "code blocks must say their language, one of "
        f"{sorted(LANGUAGES)} (see docs/writing_docs.md): " + "; ".join(unknown)
    )


def test_the_pages_have_blocks_of_each_kind():
    # Guards the extractor itself: if it stopped finding blocks, every test below would pass.
    for language in ("python", "cpp", "sh", "cmake"):
        assert by_language(language), f"no {language} block found in README.md or docs/"


# ---- Python: each page's blocks in one interpreter --------------------------------------------

PYTHON_PAGES = sorted({b.page for b in by_language("python")})


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(ROOT)) for p in PYTHON_PAGES])
def test_python_blocks_run(page, tmp_path):
    parts = []
    for b in by_language("python"):
        if b.page == page:
            code = mark_hub_lines(b)
            compile(code, b.where, "exec")  # a syntax error names its block
            parts.append(f"# ---- {b.where}\n{code}\n")
    script = tmp_path / "page.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BUILD / "python")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("OMP_NUM_THREADS", "2")
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=run_dir, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"the Python blocks of {page.relative_to(ROOT)} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )


# ---- C++: every block in one translation unit ---------------------------------------------------

CPP_BLOCKS = by_language("cpp")
MAIN = re.compile(r"\bint\s+main\s*\(\s*\)")


def translation_unit() -> str:
    includes, bodies, runners = [], [], []
    for k, b in enumerate(CPP_BLOCKS):
        rest = []
        for line in mark_hub_lines(b).split("\n"):
            if line.startswith("#include"):
                if line not in includes:
                    includes.append(line)
                rest.append("")  # keeps the #line numbering
            else:
                rest.append(line)
        body = "\n".join(rest)
        if MAIN.search(body):
            body = MAIN.sub("int block_main()", body, count=1)
            runners.append(k)
        page = b.page.relative_to(ROOT)
        bodies.append(
            f"// ---- {b.where}\nnamespace doc_block_{k} {{\n#line {b.line + 1} \"{page}\"\n{body}\n}}"
        )
    dispatch = "\n".join(
        f"  if (which == {k}) return doc_block_{k}::block_main();" for k in runners
    )
    return (
        "// Generated by tests/python/test_docs_examples.py from the cpp blocks of the docs.\n"
        + "\n".join(sorted(includes)) + "\n#include <cstdlib>\n\n" + "\n\n".join(bodies)
        + "\n\nint main(int argc, char** argv) {\n  if (argc != 2) return 2;\n"
        + "  const int which = std::atoi(argv[1]);\n" + dispatch + "\n  return 3;\n}\n"
    )


def example_commands() -> tuple[list[str], list[str]]:
    """CMake's compile and link commands for an example program, from the Ninja build in build/."""
    if not (BUILD / "build.ninja").exists():
        pytest.fail("build/build.ninja is missing: build with scripts/setup.sh (Ninja) first")
    out = subprocess.run(
        ["ninja", "-C", str(BUILD), "-t", "commands", "relational_attention"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    # Ninja wraps link commands as ": && c++ ... && :"; keep the compiler's part.
    parts = [p.strip() for c in out for p in c.split(" && ") if p.strip() != ":"]
    compile_cmd = [p for p in parts if "examples/relational_attention.cpp" in p and " -c " in p]
    link_cmd = [p for p in parts if "-o examples/relational_attention " in p + " "]
    assert compile_cmd and link_cmd, "no compile/link command for examples/relational_attention"
    return shlex.split(compile_cmd[-1]), shlex.split(link_cmd[-1])


def drop_depfile_flags(cmd: list[str]) -> list[str]:
    """The command without Ninja's dependency-file flags (-MD, -MT <target>, -MF <file>)."""
    out, skip = [], False
    for a in cmd:
        if skip:
            skip = False
        elif a in ("-MT", "-MF"):
            skip = True
        elif a != "-MD":
            out.append(a)
    return out


@pytest.fixture(scope="module")
def doc_program():
    """The docs' C++ blocks built into one program (rebuilt only when the blocks change)."""
    work = BUILD / "docs-examples"
    work.mkdir(parents=True, exist_ok=True)
    source = translation_unit()
    # Rebuilt when the blocks, the public headers or the library change (an old program linked
    # against a changed library fails with an undefined symbol, not a clear message).
    key = hashlib.sha256(source.encode())
    for header in sorted((ROOT / "include").rglob("*.h")):
        key.update(header.read_bytes())
    for library in sorted(BUILD.glob("libdual_attention.so*")):
        info = library.stat()
        key.update(f"{library.name}:{info.st_size}:{info.st_mtime_ns}".encode())
    digest = key.hexdigest()
    exe, stamp = work / "doc_blocks", work / "doc_blocks.sha256"
    if exe.exists() and stamp.exists() and stamp.read_text() == digest:
        return exe
    (work / "doc_blocks.cpp").write_text(source, encoding="utf-8")
    compile_cmd, link_cmd = example_commands()
    # Same flags, our source and object; warnings are errors in documentation code.
    src_at = next(i for i, a in enumerate(compile_cmd) if a.endswith("examples/relational_attention.cpp"))
    obj_at = compile_cmd.index("-o") + 1
    compile_cmd[src_at] = str(work / "doc_blocks.cpp")
    compile_cmd[obj_at] = str(work / "doc_blocks.o")
    compile_cmd = drop_depfile_flags(compile_cmd)
    compile_cmd += ["-Wall", "-Wextra", "-Werror"]
    obj_in = next(i for i, a in enumerate(link_cmd) if a.endswith("relational_attention.cpp.o"))
    link_cmd[obj_in] = str(work / "doc_blocks.o")
    link_cmd[link_cmd.index("-o") + 1] = str(exe)
    for cmd in (compile_cmd, link_cmd):
        proc = subprocess.run(cmd, cwd=BUILD, capture_output=True, text=True)
        assert proc.returncode == 0, (
            f"the docs' C++ blocks do not build ({work / 'doc_blocks.cpp'}; #line directives name "
            f"each block's page line):\n{proc.stderr[-8000:]}"
        )
    stamp.write_text(digest)
    return exe


def test_cpp_blocks_build(doc_program):
    assert doc_program.exists()


CPP_PROGRAMS = [(k, b) for k, b in enumerate(CPP_BLOCKS) if MAIN.search(b.code)]


@pytest.mark.parametrize("k,block", CPP_PROGRAMS, ids=[b.where for _, b in CPP_PROGRAMS])
def test_cpp_blocks_run(doc_program, k, block, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(
        [str(doc_program), str(k)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"the C++ block at {block.where} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )


def test_every_cpp_block_is_a_program():
    fragments = [b.where for b in CPP_BLOCKS if not MAIN.search(b.code)]
    assert not fragments, "cpp blocks must be whole programs with int main(): " + ", ".join(fragments)


# ---- Shell and CMake -----------------------------------------------------------------------------

SH_BLOCKS = by_language("sh")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:scripts|benchmarks|examples|tools|tests|docs)/[\w./-]+)")


@pytest.mark.parametrize("block", SH_BLOCKS, ids=[b.where for b in SH_BLOCKS])
def test_sh_blocks_parse_and_name_real_paths(block):
    proc = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert proc.returncode == 0, f"{block.where}: bash -n: {proc.stderr}"
    missing = [p for p in REPO_PATH.findall(block.code) if not (ROOT / p.rstrip(".")).exists()]
    assert not missing, f"{block.where} names paths that do not exist: {missing}"


CMAKE_BLOCKS = by_language("cmake")


@pytest.mark.parametrize("block", CMAKE_BLOCKS, ids=[b.where for b in CMAKE_BLOCKS])
def test_cmake_blocks_are_what_the_downstream_project_builds(block):
    downstream = (ROOT / "examples/downstream/CMakeLists.txt").read_text()

    def commands(text):
        text = re.sub(r"#.*", "", text)
        return [re.sub(r"\s+", " ", c).strip() for c in re.findall(r"\w+\s*\([^)]*\)", text)]

    # my_app is the downstream project's ${name}.
    known = {c.replace("${name}", "my_app") for c in commands(downstream)}
    missing = [c for c in commands(block.code) if c not in known]
    assert not missing, (
        f"{block.where}: not in examples/downstream/CMakeLists.txt (which the suite builds): {missing}"
    )


def test_every_public_header_is_in_the_cpp_api_reference():
    page = (ROOT / "docs/api/cpp.md").read_text()
    documented = set(re.findall(r"```\{doxygenfile\} (\S+)", page))
    headers = {p.name for p in (ROOT / "include/dual_attention").rglob("*.h")}
    missing = sorted(headers - documented)
    assert not missing, f"headers missing from docs/api/cpp.md (add a doxygenfile section): {missing}"
