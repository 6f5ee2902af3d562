#!/usr/bin/env python3
"""Doxygen INPUT_FILTER: lets Doxygen read the headers' plain `//` comments as documentation.

The headers are written for readers of the code (STYLE.md): a `//` comment above a declaration
says what it is, a trailing `// ...` after a member explains it, and each file opens with a
comment saying what the file holds. Doxygen only reads `///` comments, so this filter rewrites,
on the text Doxygen parses (the files themselves are untouched):

- the comment block that opens a file    -> `/// @file` (the file's description);
- separator lines (`// ----`)            -> blank lines;
- any other comment line                 -> `///` (documents the declaration that follows);
- `decl;  // text` at the end of a line  -> `decl;  ///< text` (documents that declaration);
- a raw string literal `R"(...)"` in code  -> the same string as an ordinary literal;
- indented lines inside a comment (examples, formulas) -> `@verbatim`, so they stay as written;
  other text is escaped (`<folder>`, `&`, `@`, `\\`, file names are not markup).

Line numbers are kept, so Doxygen's locations point at the real lines.
Usage (Doxyfile): INPUT_FILTER = "python3 docs/doxygen_filter.py"
"""

import json
import re
import sys

SEPARATOR = re.compile(r"^\s*//\s*-{3,}")
COMMENT = re.compile(r"^(\s*)//(?![/!])\s?(.*)$")
RAW_STRING = re.compile(r'R"\((.*?)\)"')
TRAILING = re.compile(r"^(.*?[;,{])(\s+)//(?![/!])\s?(.*)$")


def escape(text):
    """Comment text as Doxygen should print it: `<folder>`, `a & b`, `@x`, `\\n` are not markup."""
    text = re.sub(r"([\\<>&@$#%])", r"\\\1", text)
    # A file name (hub.h) would become a link to the file's page, which the site does not have.
    return re.sub(r"(?<![\w/\\%])([\w/]+\.h)\b", r"%\1", text)


def comment_block(texts):
    """Doxygen text for the lines of one comment block: prose escaped; runs of indented lines
    (examples, formulas, layouts) kept verbatim. One output line per input line."""
    out, k = [], 0
    while k < len(texts):
        if texts[k].startswith("  "):
            run = k
            while k < len(texts) and (texts[k].startswith("  ") or texts[k] == ""):
                k += 1
            while texts[k - 1] == "":
                k -= 1
            lines = texts[run:k]
            lines[0] = "@verbatim " + lines[0]
            lines[-1] += " @endverbatim"
            out.extend(lines)
        else:
            out.append(escape(texts[k]))
            k += 1
    return out


def filter_lines(lines):
    out = []
    i = 0
    while i < len(lines):
        if SEPARATOR.match(lines[i]):
            out.append("")
            i += 1
            continue
        m = COMMENT.match(lines[i])
        if m:
            indent, texts = m.group(1), []
            while i < len(lines) and COMMENT.match(lines[i]) and not SEPARATOR.match(lines[i]):
                texts.append(COMMENT.match(lines[i]).group(2))
                i += 1
            body = comment_block(texts)
            if not out:  # the file's opening comment: its description
                body[0] = f"@file {sys.argv[1].split('include/')[-1]} {body[0]}"
            out.extend(f"{indent}/// {b}" for b in body)
            continue
        # Sphinx's C++ parser cannot read raw string literals: give it the same string escaped.
        lines[i] = RAW_STRING.sub(lambda r: json.dumps(r.group(1)), lines[i])
        m = TRAILING.match(lines[i])
        if m and '"' not in m.group(1):
            out.append(f"{m.group(1)}{m.group(2)}///< {escape(m.group(3))}")
        else:
            out.append(lines[i])
        i += 1
    return out


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.read().split("\n")
    sys.stdout.write("\n".join(filter_lines(lines)))


if __name__ == "__main__":
    main()
