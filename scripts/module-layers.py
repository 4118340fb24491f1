#!/usr/bin/env python3
"""Checks that no module in src/ imports a module above it (ARCHITECTURE.md, "Layers").

Each module gets a floor; every `crate::<module>` path outside `#[cfg(test)]` code must name a
module on a lower floor (or the module itself). Exits 1 and lists the offending imports if
any. `python3 scripts/module-layers.py [--graph]`
"""

import pathlib
import re
import sys

# Bottom to top. A module may import only from modules on lower floors.
FLOORS = [
    ["reply", "domain", "i18n"],
    ["config", "metrics"],
    ["telemetry"],
    ["backend"],
    ["auth", "store", "session"],
    ["passkeys"],
    ["access", "ratelimit", "mail"],
    ["accounts"],
    ["app"],
    ["api"],
    ["portal"],
    ["gateway"],
    ["server"],
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def node_of_file(path: pathlib.Path) -> str | None:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[0] in ("lib", "main"):
        return None
    return parts[0]


def main() -> int:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        node = node_of_file(path)
        if node is None:
            continue
        text = path.read_text()
        text = text.split("#[cfg(test)]\nmod tests", 1)[0]
        for lineno, line in enumerate(text.splitlines(), 1):
            code = line.split("//", 1)[0]
            targets = [m.group(1) for m in re.finditer(r"\bcrate::(\w+)", code)]
            for target in targets:
                if target != node:
                    where = f"{path.relative_to(SRC.parent)}:{lineno}"
                    edges.setdefault((node, target), []).append(where)
    bad = []
    for (src, dst), places in sorted(edges.items()):
        if src not in FLOOR or dst not in FLOOR:
            bad.append(f"{src} -> {dst}: module without a floor ({places[0]})")
        elif FLOOR[dst] >= FLOOR[src]:
            bad.append(f"{src} -> {dst}: not below it ({', '.join(places)})")
    if "--graph" in sys.argv:
        for (src, dst), places in sorted(edges.items(), key=lambda e: (-FLOOR.get(e[0][0], 0), e[0])):
            print(f"{src} -> {dst}  ({len(places)})")
    for line in bad:
        print(line, file=sys.stderr)
    if not bad:
        print(f"{len(edges)} module edges, all pointing down", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
