"""Raw tiles start at a multiple of their element size wherever they land (after zstd
frames, after smaller elements, in streams, in appends), so readers that view a raw
tile in place as its dtype can; the padding is not reported as a layout gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tet
from tet.verify import verify
from tet.writer import aligned_offsets

DTYPES = ("u1", "i2", "f2", "f4", "i4", "u4", "f8", "i8", "u8")
dataset = st.tuples(st.sampled_from(DTYPES), st.sampled_from(("raw", "zstd")),
                    st.integers(1, 23), st.integers(1, 9), st.booleans())


def _write(w: tet.TetWriter, name: str, spec: tuple[str, str, int, int, bool],
           rng: np.random.Generator) -> np.ndarray:
    dt, codec, n, chunk, streamed = spec
    a = (rng.random(n) * 100).astype(dt)
    if streamed:
        s = w.create_dataset(name, a.shape, a.dtype, chunk_shape=(chunk,), codec=codec)
        for lo in range(0, n, 2 * chunk):  # whole tiles, so payloads stay in index order
            s[lo:lo + 2 * chunk] = a[lo:lo + 2 * chunk]
    else:
        w.write_dataset(name, a, chunk_shape=(chunk,), codec=codec)
    return a


def _check(path: Path, want: dict[str, np.ndarray]) -> None:
    with tet.open(path) as f:
        e = f.catalog.entries
        for i, rec in enumerate(f.catalog.datasets):
            rows = e[e["dataset_id"] == i]
            elem = np.dtype(want[rec.name].dtype).itemsize
            raw = rows[rows["codec"] == 0]
            assert not np.any(raw["payload_offset"] % elem), (rec.name, raw["payload_offset"])
            assert np.array_equal(f.read_numpy(rec.name), want[rec.name])
    report = verify(path, deep=True)
    assert report.ok
    assert [x.check for x in report.findings if not x.ok] == []  # the padding is no gap


@settings(max_examples=60, deadline=None)
@given(first=st.lists(dataset, min_size=1, max_size=5), later=st.lists(dataset, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_raw_tiles_are_element_aligned(tmp_path_factory: object, first: list[tuple],
                                       later: list[tuple], seed: int) -> None:
    path = Path(tmp_path_factory.mktemp("al")) / "a.tet"  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    want: dict[str, np.ndarray] = {}
    with tet.TetWriter.create(path) as w:
        for i, spec in enumerate(first):
            want[f"d{i}"] = _write(w, f"d{i}", spec, rng)
    _check(path, want)
    if later:
        w = tet.TetWriter.open_append(path)
        for i, spec in enumerate(later):
            want[f"e{i}"] = _write(w, f"e{i}", spec, rng)
        w.commit()
        _check(path, want)


def test_placement_rule() -> None:
    """Zstd frames go back to back; a raw tile waits for the next multiple of its size."""
    stored = np.array([5, 8, 3, 8], np.uint64)
    assert aligned_offsets(3, stored, np.array([1, 1, 1, 1]), 8).tolist() == [3, 8, 16, 19]
    assert aligned_offsets(3, stored[[1, 3]], np.array([0, 0]), 8).tolist() == [8, 16]
    assert aligned_offsets(3, stored, np.array([1, 0, 1, 0]), 8).tolist() == [3, 8, 16, 24]
    assert aligned_offsets(3, stored, np.array([0, 0, 0, 0]), 1).tolist() == [3, 8, 16, 19]


def test_a_fresh_raw_file_has_no_padding(tmp_path: Path) -> None:
    """Files of one raw dataset (the reference's own layout) stay byte-for-byte as they
    were: payloads back to back right after the index."""
    path = tmp_path / "r.tet"
    tet.write_dataset(path, "a", np.arange(35, dtype="f4").reshape(5, 7), chunk_shape=(2, 3))
    with tet.open(path) as f:
        e = f.catalog.entries
        first = f.catalog.chunk_index_offset + f.catalog.chunk_index_length
        assert int(e["payload_offset"][0]) == first
        ends = e["payload_offset"][:-1] + e["stored_byte_len"][:-1]
        assert np.array_equal(ends, e["payload_offset"][1:])
