"""The fast paths of inspect at scale give exactly what the plain code gives: entry parsing and natural sorting."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ckpt_tools.bundle import protos
from ckpt_tools.bundle.reader import BundleReader
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.messages import natural_key, natural_sorted

from .conftest import FIXTURES

NAMES = st.text(alphabet=st.sampled_from(list("ab/_-.0123456789\x00\x01é")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(NAMES, max_size=40))
def test_natural_sorted_orders_as_natural_key(names: list[str]) -> None:
    assert natural_sorted(names, str) == sorted(names, key=natural_key)


def _entry_value(fields: dict[str, Any]) -> bytes:
    proto = protos.BundleEntryProto()
    proto.dtype = fields["dtype"]
    for size in fields["shape"]:
        proto.shape.dim.add().size = size
    for name in ("shard_id", "offset", "size", "crc32c"):
        if fields[name] is not None:
            setattr(proto, name, fields[name])
    return bytes(proto.SerializeToString())


ENTRIES = st.fixed_dictionaries(
    {
        "dtype": st.integers(0, 30),
        "shape": st.lists(st.integers(-2, 300), max_size=4),
        "shard_id": st.one_of(st.none(), st.integers(0, 3)),
        "offset": st.one_of(st.none(), st.integers(-1, 2**40)),
        "size": st.one_of(st.none(), st.integers(-1, 2**20)),
        "crc32c": st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    }
)


def _outcome(reader: BundleReader, parse: Any) -> Any:
    try:
        return parse()
    except CkptToolsError as exc:
        return f"error: {exc}"


@settings(max_examples=400, deadline=None)
@given(ENTRIES, st.binary(max_size=6), st.integers(0, 40))
def test_entry_fast_path_matches_the_full_parse(fields: dict[str, Any], junk: bytes, cut: int) -> None:
    """Well-formed values, values with junk appended (repeated or unknown fields) and truncated ones."""
    reader = BundleReader(next((FIXTURES / "tf1_adam").glob("*.index")).with_suffix(""))
    value = _entry_value(fields)
    for variant in (value, value + junk, value[: max(0, len(value) - cut)]):
        rows = [(b"some/key", variant)]
        fast = _outcome(reader, lambda rows=rows: reader._parse_entries(rows))
        full = _outcome(reader, lambda variant=variant: [reader._parse_entry(b"some/key", variant)])
        assert fast == full, (fields, variant)
