"""A minimal pure-Python lister of a bundle (names, dtypes, shapes, sizes; no checks, no verdicts): the floor
under `ckpt inspect` at scale, timed by phase. Usage: python benchmarks/inspect_floor.py PREFIX > /dev/null"""

from __future__ import annotations

import gc
import re
import sys
import time
from pathlib import Path

START = time.perf_counter()
gc.disable()

from ckpt_tools.bundle import protos, table  # noqa: E402

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
DIGITS = re.compile(r"(\d+)")


def natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in DIGITS.split(text)]


def entries(prefix: str) -> dict[str, tuple[int, tuple[int, ...], int, int]]:
    """key -> (dtype, shape, offset, size), every entry parsed by protobuf (the header row skipped)."""
    out = {}
    for raw_key, value in table.read_table(Path(prefix + ".index"))[1:]:
        entry = protos.BundleEntryProto.FromString(value)
        out[raw_key.decode()] = (entry.dtype, tuple(d.size for d in entry.shape.dim), entry.offset, entry.size)
    return out


def names(prefix: str, parsed: dict[str, tuple[int, tuple[int, ...], int, int]]) -> dict[str, str]:
    """checkpoint key -> object path (TF2: from the object graph, walked once from the root), else the key."""
    graph_entry = parsed.get(OBJECT_GRAPH)
    if graph_entry is None:
        return {key: key for key in parsed}
    with open(prefix + ".data-00000-of-00001", "rb") as fh:
        fh.seek(graph_entry[2])
        stored = fh.read(graph_entry[3])
    length, pos = table.read_varint(stored, 0, len(stored))
    graph = protos.TrackableObjectGraph.FromString(stored[pos + 4 : pos + 4 + length])  # after the length CRC
    nodes, paths, stack, out = graph.nodes, {0: ""}, [0], {}
    while stack:
        index = stack.pop()
        here = paths[index]
        node = nodes[index]
        for child in node.children:
            if child.node_id not in paths:
                paths[child.node_id] = here + child.local_name + "/"
                stack.append(child.node_id)
        for attribute in node.attributes:
            out[attribute.checkpoint_key] = here[:-1]
    return out


def main() -> None:
    prefix = sys.argv[1]
    marks = [("imports", time.perf_counter())]
    parsed = entries(prefix)
    marks.append(("index", time.perf_counter()))
    by_key = names(prefix, parsed)
    marks.append(("names", time.perf_counter()))
    rows = sorted(((name, key) for key, name in by_key.items() if key in parsed), key=lambda r: natural(r[0]))
    marks.append(("sort", time.perf_counter()))
    lines = []
    for name, key in rows:
        dtype, shape, _, size = parsed[key]
        lines.append(f"{name:<40} {protos.DTYPE_NAMES.get(dtype, '?'):<8} {list(shape)!s:<12} {size}")
    sys.stdout.write("\n".join(lines) + "\n")
    marks.append(("output", time.perf_counter()))
    previous = START
    phases = []
    for label, at in marks:
        phases.append(f"{label} {at - previous:.3f} s")
        previous = at
    print(f"{len(rows)} rows; " + ", ".join(phases) + f"; total {previous - START:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
