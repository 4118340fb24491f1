#!/usr/bin/env python3
"""Checks that no function in src/ is longer than 100 lines (ARCHITECTURE.md, "Invariants").

A function runs from its `fn` line to the closing brace at the same indentation (rustfmt's
layout). Exits 1 and lists the functions over the limit. `python3 scripts/function-length.py`
"""

import pathlib
import re
import sys

LIMIT = 100
SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def long_functions(path: pathlib.Path):
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group(1))
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
            j += 1
        if j == len(lines) or lines[j].rstrip().endswith(";"):
            i = j + 1
            continue
        k = j + 1
        closing = " " * indent + "}"
        while k < len(lines) and not (
            lines[k].startswith(closing) and not lines[k][indent].isspace()
        ):
            k += 1
        length = k - i + 1
        if length > LIMIT:
            yield f"{path.relative_to(SRC.parent)}:{i + 1}: fn {m.group(2)} is {length} lines"
        # Nested functions are counted within their parent, and on their own.
        i = j + 1


def main() -> int:
    found = [f for p in sorted(SRC.rglob("*.rs")) for f in long_functions(p)]
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} function(s) over {LIMIT} lines")
        return 1
    print(f"no function over {LIMIT} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
