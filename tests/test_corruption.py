"""Corrupt and hostile files: `tet` must fail with a `TetError`, never anything else.

Corpus: files our writer produces (several datasets of mixed dtype with ragged
edge chunks, footer metadata, written raw and zstd, plus one with spilled
metadata) and interop files the reference wrote (``sample.tet`` without a
footer, ``multi_dataset.tet``, ``f32_2d_edge.tet``, ``metadata_spill.tet``).

- Truncation at every region boundary (superblock fields, directory records,
  index header and rows, each payload start/end, spill, footer JSON and tail):
  every one of these files has a footer or payloads ending at EOF, so every
  strict prefix must raise `tet.CatalogError` from ``tet.open``; where layout.md
  §7 gives the text, the message is checked.
- Seeded random byte flips (single and multi-byte) in each region: opening,
  summarising and reading every dataset (copying and zero-copy) either succeeds
  or raises `tet.TetError`; a read that succeeds on a payload-only flip of a raw
  file differs from the original only inside the flipped tile.  A larger batch
  runs in a child interpreter, which must exit normally (no segfault/abort).
- Hostile headers built by hand: huge ``dataset_blob_len`` / ``entry_count`` /
  index span, ``ndim`` 0 and 9, zero extents, ``payload_offset`` near 2**64,
  unsupported codec, raw/stored mismatch, wrong ``raw_byte_len``, zstd frames
  whose content size differs from ``raw_byte_len`` or that are garbage, dtype
  tag 99 (opens; reading raises "unsupported dataset dtype 99 ..."), and the
  exact upstream texts of the §7 checklist.
- Hostile footers: bad version, out-of-bounds ``json_len`` / ``metadata_ref``,
  payloads running into the footer, wrongly-shaped history rows and metadata
  members (open and read must raise `TetError` or succeed).
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP, REPO
from tests.helpers import with_footer
from tet.footer import encode_footer

EXCEPTION_TYPES = (tet.TetError,)


# ---------------------------------------------------------------------------
# corpus


def _our_datasets() -> list[tuple[str, np.ndarray[Any, Any], tuple[int, ...], dict[str, Any]]]:
    rng = np.random.default_rng(1234)
    return [
        ("temperature", rng.standard_normal((7, 10)).astype(np.float32), (3, 4),
         {"attrs": {"units": "K", "_FillValue": -9999}, "dim_names": ["row", "col"],
          "coords": {"row": [f"r{i}" for i in range(7)]}}),
        ("counts", rng.integers(-2**40, 2**40, size=(4, 5, 3)).astype(np.int64), (3, 2, 2), {}),
        ("mask", rng.integers(0, 255, size=(13,)).astype(np.uint8), (5,), {"attrs": {"a": "b"}}),
        ("half", rng.standard_normal((3, 3)).astype(np.float16), (2, 2), {}),
    ]


def _write_ours(path: Path, codec: str, spill: bool = False) -> None:
    w = tet.TetWriter.create(path)
    for name, a, chunk, meta in _our_datasets():
        if spill and name == "temperature":
            meta = dict(meta, attrs={f"k{i:02d}": "x" * 1010 for i in range(64)})
        w.write_dataset(name, a, chunk_shape=chunk, codec=codec, **meta)
    w.push_history_event("test", "corruption corpus", params={"codec": codec})
    w.commit()


INTEROP_FILES = ["sample.tet", "multi_dataset.tet", "f32_2d_edge.tet", "metadata_spill.tet"]
CORPUS_NAMES = ["ours_raw.tet", "ours_zstd.tet", "ours_spill.tet", *INTEROP_FILES]


Corpus = dict[str, tuple[bytes, dict[str, np.ndarray[Any, Any]]]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """name -> (file bytes, {dataset: original array})."""
    d = tmp_path_factory.mktemp("corpus")
    _write_ours(d / "ours_raw.tet", "raw")
    _write_ours(d / "ours_zstd.tet", "zstd")
    _write_ours(d / "ours_spill.tet", "raw", spill=True)
    out = {}
    for name in CORPUS_NAMES:
        src = INTEROP / name if name in INTEROP_FILES else d / name
        with tet.open(src) as f:
            arrays = {n: f.read_numpy(n) for n in f.dataset_names}
        out[name] = (src.read_bytes(), arrays)
    for name, a, _, _ in _our_datasets():  # our writer round-trips first
        assert np.array_equal(out["ours_zstd.tet"][1][name], a)
    return out


def regions(buf: bytes) -> dict[str, tuple[int, int]]:
    """Named byte spans of a valid file (from the parsed catalog)."""
    cat = tet.layout.parse_catalog(buf, len(buf))
    r: dict[str, tuple[int, int]] = {"superblock": (0, 32)}
    if cat.dataset_count:
        r["directory"] = (32, cat.chunk_index_offset)
        r["index_header"] = (cat.chunk_index_offset, cat.chunk_index_offset + 32)
        r["index_rows"] = (cat.chunk_index_offset + 32,
                           cat.chunk_index_offset + cat.chunk_index_length)
        starts = cat.entries["payload_offset"].astype(np.int64)
        ends = starts + cat.entries["stored_byte_len"].astype(np.int64)
        r["payload"] = (int(starts.min()), int(ends.max()))
    if cat.flags & 1:
        r["footer"] = (cat.payload_bound, len(buf))
        r["footer_tail"] = (len(buf) - 16, len(buf))
    return r


def cut_points(buf: bytes) -> list[int]:
    """Offsets at every region boundary (and just inside them)."""
    n = len(buf)
    cat = tet.layout.parse_catalog(buf, n)
    pts = {0, 1, 4, 8, 10, 12, 16, 24, 31, 32, 33, 39, 40}
    if cat.dataset_count:
        at = 40
        for rec in cat.datasets:
            length = ((16 + len(rec.name.encode()) + 7) & ~7) + 16 * rec.ndim
            pts |= {at, at + 4, at + 8, at + 16, at + length // 2, at + length - 1}
            at += length
        io, il = cat.chunk_index_offset, cat.chunk_index_length
        pts |= {at, io - 1, io, io + 4, io + 8, io + 16, io + 31, io + 32, io + il - 1, io + il}
        for k in range(len(cat.entries)):
            row = io + 32 + 104 * k
            pts |= {row, row + 72, row + 103}
        for off, stored in zip(cat.entries["payload_offset"], cat.entries["stored_byte_len"]):
            a, b = int(off), int(off) + int(stored)
            pts |= {a, a + 1, b - 1, b}
    if cat.flags & 1:
        jl = struct.unpack_from("<Q", buf, n - 16)[0]
        pts |= {cat.payload_bound, cat.payload_bound + 1, n - 16 - jl, n - 16 - jl + 1,
                n - 16, n - 12, n - 8, n - 5, n - 4, n - 1}
    pts |= {n - 1}
    return sorted(p for p in pts if 0 <= p < n)


def exercise(path: Path) -> str:
    """Open, summarise and read everything; return "open"/"read" error stage or "ok".

    Any exception that is not a TetError propagates.
    """
    try:
        f = tet.open(path)
    except EXCEPTION_TYPES:
        return "open"
    stage = "ok"
    with f:
        json.dumps(f.summary())
        _ = f.history, f.metadata
        for name in f.dataset_names:
            try:
                ds = f[name]
                _ = ds.attrs, ds.dim_names, ds.coords
                f.read_numpy(name)
                f.read_numpy(name, copy=None)
            except EXCEPTION_TYPES:
                stage = "read"
    return stage


# ---------------------------------------------------------------------------
# truncation


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_truncation_at_region_boundaries(
    corpus: dict[str, Any], tmp_path: Path, name: str
) -> None:
    buf, _ = corpus[name]
    path = tmp_path / "cut.tet"
    points = cut_points(buf)
    assert len(points) > 20
    for n in points:
        path.write_bytes(buf[:n])
        with pytest.raises(tet.CatalogError) as info:
            tet.open(path)
        msg = str(info.value)
        if n < 32:
            assert msg == f"file too short for superblock: need 32 bytes, got {n}"
    # the untruncated file still opens and reads
    path.write_bytes(buf)
    assert exercise(path) == "ok"


def test_truncated_payload_message(tmp_path: Path) -> None:
    buf = (INTEROP / "sample.tet").read_bytes()
    path = tmp_path / "t.tet"
    path.write_bytes(buf[:360])
    with pytest.raises(tet.CatalogError, match=r"chunk payload \[360, 368\) out of bounds "
                                                r"for file length 360"):
        tet.open(path)
    path.write_bytes(buf[:100])
    with pytest.raises(tet.CatalogError, match="chunk index region is out of bounds for file "
                                                "length 100: offset 104, length 240"):
        tet.open(path)


def test_truncated_footer_messages(corpus: dict[str, Any], tmp_path: Path) -> None:
    buf, _ = corpus["ours_raw.tet"]
    path = tmp_path / "t.tet"
    path.write_bytes(buf[:-1])
    with pytest.raises(tet.CatalogError, match="superblock history flag set but footer missing"):
        tet.open(path)


def test_truncated_file_that_still_validates(corpus: dict[str, Any], tmp_path: Path) -> None:
    """Dropping the footer and clearing flag bit 0 gives a valid file: same data, no history."""
    buf, arrays = corpus["ours_zstd.tet"]
    cat = tet.layout.parse_catalog(buf, len(buf))
    cut = bytearray(buf[: cat.payload_bound])
    struct.pack_into("<I", cut, 12, 0)
    path = tmp_path / "nofooter.tet"
    path.write_bytes(bytes(cut))
    with tet.open(path) as f:
        assert f.history == [] and f.metadata == {}
        for name, a in arrays.items():
            assert np.array_equal(f.read_numpy(name), a, equal_nan=True)


# ---------------------------------------------------------------------------
# random byte flips


def flip_cases(buf: bytes, seed: int, per_region: int) -> list[list[tuple[int, int]]]:
    """Lists of (offset, xor mask) per corruption, spread over every region."""
    rng = random.Random(seed)
    out = []
    for lo, hi in regions(buf).values():
        for _ in range(per_region):
            k = rng.choice((1, 1, 1, 2, 3))
            out.append([(rng.randrange(lo, hi), rng.randrange(1, 256)) for _ in range(k)])
    return out


def apply(buf: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(buf)
    for at, mask in flips:
        b[at] ^= mask
    return bytes(b)


def fuzz_batch(corpus_dir: str, seed: int, per_region: int) -> dict[str, Any]:
    """Corrupt every corpus file in `corpus_dir`; count outcomes, collect non-TetErrors."""
    stats: dict[str, Any] = {"ok": 0, "open": 0, "read": 0, "other": []}
    d = Path(corpus_dir)
    work = d / "work"
    work.mkdir(exist_ok=True)
    for src in sorted(d.glob("*.tet")):
        buf = src.read_bytes()
        for i, flips in enumerate(flip_cases(buf, seed, per_region)):
            path = work / f"{src.stem}.{i}.tet"
            path.write_bytes(apply(buf, flips))
            try:
                stats[exercise(path)] += 1
            except Exception as exc:  # the bug we are looking for
                stats["other"].append(f"{src.name} {flips}: {type(exc).__name__}: {exc}")
            path.unlink()
    return stats


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_random_flips_raise_only_tet_errors(
    corpus: dict[str, Any], tmp_path: Path, name: str
) -> None:
    buf, _ = corpus[name]
    path = tmp_path / "flip.tet"
    outcomes = {"ok": 0, "open": 0, "read": 0}
    cases = flip_cases(buf, seed=20240611 + CORPUS_NAMES.index(name), per_region=30)
    assert len(cases) >= 4 * 30
    for flips in cases:
        path.write_bytes(apply(buf, flips))
        try:
            outcomes[exercise(path)] += 1
        except Exception as exc:
            pytest.fail(f"{name} flips {flips}: {type(exc).__name__} is not a TetError: {exc}")
    assert outcomes["open"] > 0  # header flips are caught


@pytest.mark.parametrize("name", ["ours_raw.tet", "sample.tet", "f32_2d_edge.tet"])
def test_raw_payload_flip_changes_only_that_tile(
    corpus: dict[str, Any], tmp_path: Path, name: str
) -> None:
    buf, arrays = corpus[name]
    cat = tet.layout.parse_catalog(buf, len(buf))
    rng = random.Random(7)
    path = tmp_path / "p.tet"
    for row in rng.sample(range(len(cat.entries)), min(8, len(cat.entries))):
        e = cat.entries[row]
        at = int(e["payload_offset"]) + rng.randrange(int(e["stored_byte_len"]))
        path.write_bytes(apply(buf, [(at, 0xFF)]))
        record = cat.datasets[int(e["dataset_id"])]
        with tet.open(path) as f:
            for n, a in arrays.items():
                got = f.read_numpy(n)
                if n != record.name:
                    assert np.array_equal(got, a, equal_nan=True)
                    continue
                diff = ~((got == a) | ((got != got) & (a != a)))
                coords = [int(c) for c in e["chunk_index"][: a.ndim]]
                inside = np.zeros(a.shape, bool)
                inside[tuple(slice(c * k, (c + 1) * k)
                             for c, k in zip(coords, record.chunk_shape))] = True
                assert diff.any() and not (diff & ~inside).any()


def test_zstd_payload_flips_raise_chunk_error(corpus: dict[str, Any], tmp_path: Path) -> None:
    buf, arrays = corpus["ours_zstd.tet"]
    cat = tet.layout.parse_catalog(buf, len(buf))
    path = tmp_path / "z.tet"
    for row in range(len(cat.entries)):
        e = cat.entries[row]
        name = cat.datasets[int(e["dataset_id"])].name
        # the 4-byte frame magic: always undecodable
        path.write_bytes(apply(buf, [(int(e["payload_offset"]), 0x01)]))
        with tet.open(path) as f, pytest.raises(tet.ChunkError, match="zstd decode failed"):
            f.read_numpy(name)
        # truncating the frame (stored length one byte short)
        b = bytearray(buf)
        struct.pack_into("<Q", b, cat.chunk_index_offset + 32 + 104 * row + 88,
                         int(e["stored_byte_len"]) - 1)
        path.write_bytes(bytes(b))
        with tet.open(path) as f, pytest.raises(tet.ChunkError):
            f.read_numpy(name)
        for other, a in arrays.items():
            if other != name:
                with tet.open(path) as f:
                    assert np.array_equal(f.read_numpy(other), a, equal_nan=True)


CHILD = textwrap.dedent(
    """
    import json, sys
    from tests.test_corruption import fuzz_batch
    print(json.dumps(fuzz_batch(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
    """
)


def test_fuzz_batch_in_child_process(corpus: dict[str, Any], tmp_path: Path) -> None:
    for name, (buf, _) in corpus.items():
        (tmp_path / name).write_bytes(buf)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "987654321", "40"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-3000:]}"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["ok"] + stats["open"] + stats["read"] >= 7 * 4 * 40
    assert stats["other"] == []


# ---------------------------------------------------------------------------
# hostile headers (patched sample.tet, layout.md §9 offsets)

SAMPLE = (INTEROP / "sample.tet").read_bytes()
E0 = 0x88  # first index row
E1 = 0xF0


def patched(*edits: tuple[int, str, int], base: bytes = SAMPLE) -> bytes:
    b = bytearray(base)
    for at, fmt, value in edits:
        struct.pack_into("<" + fmt, b, at, value)
    return bytes(b)


def open_bytes(tmp_path: Path, data: bytes) -> tet.TetFile:
    path = tmp_path / "hostile.tet"
    path.write_bytes(data)
    return tet.open(path)


OPEN_ERRORS = [
    ("short-10", SAMPLE[:10], "file too short for superblock: need 32 bytes, got 10"),
    ("bad-magic", b"NOPE" + SAMPLE[4:], r"bad magic: expected TETR, got \[78, 79, 80, 69\]"),
    ("layout-v2", patched((4, "I", 2)), r"unsupported layout_version: 2 \(only 1 is supported\)"),
    ("layout-v0", patched((4, "I", 0)), r"unsupported layout_version: 0 \(only 1 is supported\)"),
    ("flag-no-footer", patched((12, "I", 1)), "superblock history flag set but footer missing"),
    ("index-len-huge", patched((24, "Q", 2**64 - 1)),
     "chunk index region is out of bounds for file length 368: offset 104, "
     "length 18446744073709551615"),
    ("index-off-overflow", patched((16, "Q", 2**64 - 8), (24, "Q", 16)),
     "chunk index region is out of bounds for file length 368"),
    ("dir-missing", patched((24, "Q", 0), (16, "Q", 32), base=SAMPLE[:32]),
     r"dataset_count is 1 but dataset directory is missing \(file length 32\)"),
    ("blob-len-huge", patched((32, "Q", 2**64 - 1)), "file too short for catalog"),
    ("blob-len-2^63", patched((32, "Q", 2**63)), "file too short for catalog"),
    ("ndim-0", patched((0x30, "I", 0)), r"ndim 0 out of range \(max 8\)"),
    ("ndim-9", patched((0x30, "I", 9)), r"ndim 9 out of range \(max 8\)"),
    ("name-len-huge", patched((0x28, "I", 2**32 - 1)),
     "name of 4294967295 bytes runs past the dataset directory"),
    ("name-utf8", patched((0x38, "B", 0xFF)), "invalid UTF-8 in dataset name"),
    ("blob-mismatch", patched((32, "Q", 72)),
     "dataset blob length mismatch: declared 72, parsed 64"),
    ("count-2", patched((8, "I", 2)), "dataset record 1 at offset 104 is truncated"),
    ("index-off-mismatch", patched((16, "Q", 112), (24, "Q", 240)),
     "chunk index offset mismatch: superblock says 112, expected 104"),
    ("tidx-magic", patched((0x68, "I", 0x58444954 ^ 0xFF)), "bad chunk index magic: expected TIDX"),
    ("tidx-version", patched((0x6C, "I", 2)), "unsupported chunk index version: 2"),
    ("entry-count-huge", patched((0x70, "Q", 2**64 - 1)),
     "chunk index entry count 18446744073709551615 does not fit in region length 240"),
    ("entry-count-3", patched((0x70, "Q", 3)),
     "chunk index entry count 3 does not fit in region length 240"),
    ("entry-count-1", patched((0x70, "Q", 1)),
     "chunk index entry count 1 does not fit in region length 240"),
    ("codec-2", patched((E0 + 96, "I", 2)),
     r"unsupported codec 2 \(supported: 0 = raw, 1 = zstd\)"),
    ("codec-max", patched((E1 + 96, "I", 2**32 - 1)),
     r"unsupported codec 4294967295 \(supported: 0 = raw, 1 = zstd\)"),
    ("raw-stored-mismatch", patched((E0 + 88, "Q", 12)),
     "raw/stored length mismatch for codec=0: raw=16, stored=12"),
    ("payload-near-2^64", patched((E0 + 72, "Q", 2**64 - 8)),
     r"chunk payload \[.*\) out of bounds"),
    ("payload-max", patched((E1 + 72, "Q", 2**64 - 1)), r"chunk payload \[.*\) out of bounds"),
    ("payload-past-eof", patched((E1 + 72, "Q", 361)),
     r"chunk payload \[361, 369\) out of bounds for file length 368"),
    ("stored-huge-zstd", patched((E0 + 96, "I", 1), (E0 + 88, "Q", 2**64 - 1)),
     r"chunk payload \[.*\) out of bounds"),
    ("stored-huge-raw", patched((E0 + 80, "Q", 2**64 - 1), (E0 + 88, "Q", 2**64 - 1)),
     r"chunk payload \[.*\) out of bounds"),
    ("shape-huge", patched((0x48, "Q", 2**62)),
     r"dataset record 0 \('temperature'\): shape \[4611686018427387904, 3\] has "
     r"13835058055282163712 elements, which does not fit 63 bits"),
    ("extent-huge", patched((0x48, "Q", 2**63)),
     r"dataset record 0 \('temperature'\): shape \[9223372036854775808, 3\] has an extent "
     r"of 9223372036854775808 on axis 0, which does not fit 63 bits"),
    ("shape-bytes-huge", patched((0x48, "Q", 2**61)),
     r"dataset record 0 \('temperature'\): shape \[2305843009213693952, 3\] of f32 is "
     r"6917529027641081856 x 4 = 27670116110564327424 bytes, which does not fit 63 bits"),
]


@pytest.mark.parametrize("data,text", [c[1:] for c in OPEN_ERRORS], ids=[c[0] for c in OPEN_ERRORS])
def test_hostile_header_refused_at_open(tmp_path: Path, data: bytes, text: str) -> None:
    with pytest.raises(tet.CatalogError, match=text):
        open_bytes(tmp_path, data)


READ_ERRORS = [
    ("chunk-shape-0", patched((0x58 + 8, "Q", 0)), "invalid geometry"),
    ("shape-0", patched((0x48, "Q", 0)), "invalid geometry"),
    ("shape-huge-extent", patched((0x2C, "I", 5), (0x48, "Q", 2**62), (0x50, "Q", 1)),
     "invalid geometry on axis 0"),
    ("chunk-huge-grid", patched((0x58, "Q", 1), (0x58 + 8, "Q", 1), (0x48, "Q", 2**40)),
     "declares 3298534883328 tiles but the chunk index has only 2 rows"),
    ("raw-len-wrong", patched((E0 + 80, "Q", 12), (E0 + 88, "Q", 12)),
     "tile has 4 values but raw_byte_len implies 3"),
    ("chunk-coord-outside", patched((E1 + 16, "Q", 7)), "chunk index has no row"),
    ("dataset-id-wrong", patched((E1, "Q", 5)), "chunk index has no row"),
    ("dtype-99", patched((0x2C, "I", 99)),
     r"unsupported dataset dtype 99 \(supported: f32=1, f64=2, i32=3, i64=4, u8=5, u16=6, "
     r"i16=7, u32=8, f16=9, u64=10\)"),
    ("dtype-0", patched((0x2C, "I", 0)), "unsupported dataset dtype 0"),
]


@pytest.mark.parametrize("data,text", [c[1:] for c in READ_ERRORS], ids=[c[0] for c in READ_ERRORS])
def test_hostile_header_refused_at_read(tmp_path: Path, data: bytes, text: str) -> None:
    """The catalog parser does not check these (§7 "not checked at open"); reads do."""
    with open_bytes(tmp_path, data) as f:
        json.dumps(f.summary())
        with pytest.raises(tet.TetError, match=text):
            f.read_numpy("temperature")
        with pytest.raises(tet.TetError, match=text):
            f.read_numpy("temperature", copy=None)


def test_huge_grid_small_selection(tmp_path: Path) -> None:
    data = patched((0x58, "Q", 1), (0x58 + 8, "Q", 1), (0x48, "Q", 2**40))
    with open_bytes(tmp_path, data) as f, pytest.raises(
        tet.CatalogError, match=r"declares \d+ tiles but the chunk index has only 2 rows"
    ):
        f.read_numpy("temperature", selection=[{"start": 0, "stop": 1}, {"start": 0, "stop": 1}])


def test_dtype_99_opens_and_names_the_tag(tmp_path: Path) -> None:
    with open_bytes(tmp_path, patched((0x2C, "I", 99))) as f:
        assert f.dataset_names() == ["temperature"]
        assert f.summary()["datasets"][0]["dtype"] == 99
        assert f["temperature"].dtype == 99
        with pytest.raises(tet.CatalogError) as info:
            f.read_numpy("temperature")
    assert str(info.value).startswith("unsupported dataset dtype 99 (supported: f32=1, f64=2")


def test_duplicate_index_rows_first_wins(tmp_path: Path) -> None:
    """Readers find a tile by (dataset_id, chunk_index); with duplicates the first row wins."""
    data = patched((E1 + 16, "Q", 0), (E1 + 72, "Q", 0x158), (E1 + 80, "Q", 16), (E1 + 88, "Q", 16))
    with open_bytes(tmp_path, data) as f, pytest.raises(tet.TetError, match="no row"):
        f.read_numpy("temperature")
    with open_bytes(tmp_path, data) as f:  # the tile that has a row reads fine
        got = f.read_numpy("temperature", selection={"start": [0, 0], "stop": [2, 2]})
    assert np.array_equal(got, np.array([[1, 2], [4, 5]], np.float32))


def test_index_rows_in_any_order(tmp_path: Path) -> None:
    b = bytearray(SAMPLE)
    b[E0:E1], b[E1 : E1 + 104] = SAMPLE[E1 : E1 + 104], SAMPLE[E0:E1]
    with open_bytes(tmp_path, bytes(b)) as f:
        assert np.array_equal(f.read_numpy("temperature"),
                              np.arange(1, 7, dtype=np.float32).reshape(2, 3))


# -- zstd frames that lie about their size ------------------------------------


def _zstd_frame(tmp_path: Path, values: np.ndarray[Any, Any]) -> bytes:
    path = tmp_path / "frame.tet"
    tet.write_dataset(path, "v", values, chunk_shape=values.shape, codec="zstd")
    with tet.open(path) as f:
        row = f.summary()["chunks"][0]
    b = path.read_bytes()
    frame = b[row["payload_offset"] : row["payload_offset"] + row["stored_byte_len"]]
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    return frame


def _sample_with_zstd(frames: list[bytes]) -> bytes:
    """sample.tet with its two payloads replaced by the given zstd frames."""
    b = bytearray(SAMPLE[:0x158])
    at = 0x158
    for row, frame in zip((E0, E1), frames):
        struct.pack_into("<QQI", b, row + 72, at, 0, 0)  # offset; raw patched below
        struct.pack_into("<Q", b, row + 88, len(frame))
        struct.pack_into("<I", b, row + 96, 1)
        at += len(frame)
    struct.pack_into("<Q", b, E0 + 80, 16)
    struct.pack_into("<Q", b, E1 + 80, 8)
    return bytes(b) + b"".join(frames)


def test_zstd_frames_valid(tmp_path: Path) -> None:
    f0 = _zstd_frame(tmp_path, np.array([1, 2, 4, 5], np.float32))
    f1 = _zstd_frame(tmp_path, np.array([3, 6], np.float32))
    with open_bytes(tmp_path, _sample_with_zstd([f0, f1])) as f:
        assert np.array_equal(f.read_numpy("temperature"),
                              np.arange(1, 7, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("declared", [5, 3, 2, 1000])
def test_zstd_frame_declaring_other_size(tmp_path: Path, declared: int) -> None:
    lie = _zstd_frame(tmp_path, np.arange(declared, dtype=np.float32))
    good = _zstd_frame(tmp_path, np.array([3, 6], np.float32))
    with open_bytes(tmp_path, _sample_with_zstd([lie, good])) as f:
        with pytest.raises(tet.ChunkError,
                           match=r"decoded payload length \d+ != raw_byte_len 16"
                                 r"|zstd decode failed"):
            f.read_numpy("temperature")
        # the other tile alone still reads
        sel = [{"start": 0, "stop": 2}, {"start": 2, "stop": 3}]
        got = f.read_numpy("temperature", selection=sel)
        assert np.array_equal(got, np.array([[3], [6]], np.float32))


def test_zstd_garbage_frame(tmp_path: Path) -> None:
    junk = b"\x28\xb5\x2f\xfd" + bytes(range(40))
    good = _zstd_frame(tmp_path, np.array([3, 6], np.float32))
    with open_bytes(tmp_path, _sample_with_zstd([junk, good])) as f:
        with pytest.raises(tet.ChunkError, match="zstd decode failed"):
            f.read_numpy("temperature")
        with pytest.raises(tet.ChunkError):
            f.read_numpy("temperature", copy=None)


def test_raw_payload_read_as_zstd(tmp_path: Path) -> None:
    b = patched((E0 + 96, "I", 1))
    with open_bytes(tmp_path, b) as f, pytest.raises(tet.ChunkError, match="zstd decode failed"):
        f.read_numpy("temperature")


# ---------------------------------------------------------------------------
# hostile footers


GOOD_FOOTER = b'{"history":[{"op":"write","source":"s","at":"1"}]}'


def test_footer_reference_good(tmp_path: Path) -> None:
    with open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER)) as f:
        assert f.history == [{"op": "write", "source": "s", "at": "1"}]
        assert f.read_numpy("temperature").sum() == 21


@pytest.mark.parametrize("version", [0, 3, 2**32 - 1])
def test_footer_version_must_be_1_or_2(tmp_path: Path, version: int) -> None:
    """layout.md §5.4 and spec README #2: version 1, and the reference writers' 2, are read;
    any other version is refused."""
    with pytest.raises(tet.CatalogError, match="unsupported history footer version"):
        open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, version=version))


def test_footer_version_2_is_read(tmp_path: Path) -> None:
    with open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, version=2)) as f:
        assert f.catalog.footer_version == 2


def test_footer_tail_checked_even_without_flag(tmp_path: Path) -> None:
    with pytest.raises(tet.CatalogError, match="unsupported history footer version"):
        open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, version=7, flags=0))
    with pytest.raises(tet.CatalogError, match="history footer out of bounds"):
        open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, json_len=10_000, flags=0))


@pytest.mark.parametrize("json_len", [10_000, 2**63, 2**64 - 1, 2**64 - 16])
def test_footer_json_len_out_of_bounds(tmp_path: Path, json_len: int) -> None:
    with pytest.raises(tet.CatalogError, match="history footer out of bounds"):
        open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, json_len=json_len))


def test_footer_json_len_swallowing_payloads(tmp_path: Path) -> None:
    """A json_len that reaches back into the payloads: payloads then exceed their bound
    (or the JSON fails to parse) — an error either way."""
    with pytest.raises(tet.CatalogError):
        open_bytes(tmp_path, with_footer(SAMPLE, GOOD_FOOTER, json_len=len(GOOD_FOOTER) + 4))


def test_payload_running_into_footer(tmp_path: Path) -> None:
    base = patched((E1 + 80, "Q", 12), (E1 + 88, "Q", 12))
    with pytest.raises(tet.CatalogError, match=r"chunk payload \[360, 372\) out of bounds"):
        open_bytes(tmp_path, with_footer(base, GOOD_FOOTER))


@pytest.mark.parametrize("text", [b"XXXX", b"", b"[1,2]", b'"s"', b"\xff\xfe{}", b'{"history":'])
def test_footer_json_parse(tmp_path: Path, text: bytes) -> None:
    with pytest.raises(tet.CatalogError, match="invalid one-chunk write spec: footer JSON parse"):
        open_bytes(tmp_path, with_footer(SAMPLE, text))


def test_metadata_ref_out_of_bounds(tmp_path: Path) -> None:
    for ref in ({"offset": 300, "len": 1000}, {"offset": 2**64 - 1, "len": 2},
                {"offset": 10_000, "len": 0}):
        doc = json.dumps({"history": [], "metadata_ref": ref}).encode()
        with pytest.raises(tet.CatalogError, match="metadata_ref out of bounds"):
            open_bytes(tmp_path, with_footer(SAMPLE, doc))


def test_metadata_ref_over_payloads(tmp_path: Path) -> None:
    """The payload region ends where the spill starts: a spill over the payloads is refused."""
    doc = json.dumps({"history": [], "metadata_ref": {"offset": 0x160, "len": 4}}).encode()
    with pytest.raises(tet.CatalogError):
        open_bytes(tmp_path, with_footer(SAMPLE, doc))


def test_metadata_ref_wins_over_inline(tmp_path: Path) -> None:
    spill = json.dumps({"datasets": {"temperature": {"attrs": {"from": "spill"}}}}).encode()
    doc = json.dumps({"history": [],
                      "metadata": {"datasets": {"temperature": {"attrs": {"from": "inline"}}}},
                      "metadata_ref": {"offset": 368, "len": len(spill)}}).encode()
    with open_bytes(tmp_path, with_footer(SAMPLE, doc, spill=spill)) as f:
        assert f["temperature"].attrs == {"from": "spill"}
        assert f.read_numpy("temperature").shape == (2, 3)


def test_spilled_metadata_limits_validated(tmp_path: Path) -> None:
    spill = json.dumps({"datasets": {"temperature": {"attrs": {"k": "v" * 1025}}}}).encode()
    doc = json.dumps({"history": [], "metadata_ref": {"offset": 368, "len": len(spill)}}).encode()
    with pytest.raises(tet.CatalogError, match="attr_string_bytes"):
        open_bytes(tmp_path, with_footer(SAMPLE, doc, spill=spill))


def test_legacy_history_rows(tmp_path: Path) -> None:
    doc = b'{"history":[["convert","h5","1717000000"],{"op":"w","source":"s","at":"2"}]}'
    with open_bytes(tmp_path, with_footer(SAMPLE, doc)) as f:
        assert f.history == [{"op": "convert", "source": "h5", "at": "1717000000"},
                             {"op": "w", "source": "s", "at": "2"}]


@pytest.mark.parametrize("row", [
    {"op": "a", "source": "b", "at": "1", "extra": "x"},
    {"op": "a", "source": "b", "at": 1},
    {"op": "a", "source": "b"},
    ["a", "b"],
    ["a", "b", 3],
    5,
])
def test_bad_history_rows_refused(tmp_path: Path, row: Any) -> None:
    doc = json.dumps({"history": [row]}).encode()
    with pytest.raises(tet.CatalogError):
        open_bytes(tmp_path, with_footer(SAMPLE, doc))


# Footers whose JSON parses but whose members have the wrong shape.  The spec
# leaves inline metadata unvalidated at open, but whatever happens must be a
# TetError (or success), never AttributeError / TypeError / ValueError.
MALFORMED_FOOTERS = {
    "params-list": {"history": [{"op": "a", "source": "b", "at": "1", "params": [1, 2]}]},
    "params-string": {"history": [{"op": "a", "source": "b", "at": "1", "params": "k=v"}]},
    "parents-int": {"history": [{"op": "a", "source": "b", "at": "1", "parents": 5}]},
    "parents-object": {"history": [{"op": "a", "source": "b", "at": "1", "parents": {"a": 1}}]},
    "history-object": {"history": {"op": "a"}},
    "metadata-list": {"history": [], "metadata": [1]},
    "datasets-list": {"history": [], "metadata": {"datasets": []}},
    "datasets-string": {"history": [], "metadata": {"datasets": "temperature"}},
    "entry-list": {"history": [], "metadata": {"datasets": {"temperature": [1]}}},
    "attrs-list": {"history": [], "metadata": {"datasets": {"temperature": {"attrs": [1]}}}},
    "attrs-string": {"history": [], "metadata": {"datasets": {"temperature": {"attrs": "xy"}}}},
    "dim-names-int": {"history": [], "metadata": {"datasets": {"temperature": {"dim_names": 3}}}},
    "coords-list": {"history": [], "metadata": {"datasets": {"temperature": {"coords": [1]}}}},
    "labels-int": {"history": [],
                   "metadata": {"datasets": {"temperature": {"coords": {"0": {"labels": 5}}}}}},
    "ref-string": {"history": [], "metadata_ref": "0:10"},
    "ref-negative": {"history": [], "metadata_ref": {"offset": -1, "len": 2}},
}


@pytest.mark.parametrize("doc", list(MALFORMED_FOOTERS.values()), ids=list(MALFORMED_FOOTERS))
def test_malformed_footer_members_raise_tet_error(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "m.tet"
    path.write_bytes(with_footer(SAMPLE, json.dumps(doc).encode()))
    try:
        stage = exercise(path)
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} is not a TetError: {exc}")
    assert stage in {"ok", "open", "read"}


def test_footer_written_by_encode_footer_is_accepted(tmp_path: Path) -> None:
    meta = {"datasets": {"temperature": {"attrs": {"units": "K"}}}}
    row = {"op": "write", "source": "x", "at": "1"}
    b = bytearray(SAMPLE)
    struct.pack_into("<I", b, 12, 1)
    with open_bytes(tmp_path, bytes(b) + encode_footer([row], meta, 368)) as f:
        assert f["temperature"].attrs == {"units": "K"}
        assert f.history == [row]



@pytest.mark.parametrize("threads", ["1", "4"])
def test_parallel_read_reports_first_bad_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    """An 8 MiB zstd read (multi-threaded above 4 MiB) with three corrupt frames fails
    with the lowest bad chunk, every time, and leaves other selections readable."""
    monkeypatch.setenv("TET_THREADS", threads)
    a = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)
    path = tmp_path / "big.tet"
    tet.write_dataset(path, "x", a, chunk_shape=(256, 256), codec="zstd")
    with tet.open(path) as f:
        rows = f.summary()["chunks"]
    b = bytearray(path.read_bytes())
    for k in (21, 5, 30):  # linear grid ids; grid is (8, 4)
        b[rows[k]["payload_offset"]] ^= 0x01
    path.write_bytes(bytes(b))
    with tet.open(path) as f:
        for _ in range(3):
            with pytest.raises(tet.ChunkError,
                               match=r"chunk_index=\[1, 1\]: zstd decode failed"):
                f.read_numpy("x")
        ok = f.read_numpy("x", selection=[{"start": 0, "stop": 256}, {"start": 0, "stop": 1024}])
        assert np.array_equal(ok, a[:256])


def test_chunk_error_carries_its_tile_index(tmp_path: Path) -> None:
    """A tile that does not decode is named in the text and, as `tile_index` (row-major in
    the dataset's chunk grid), as a field of the error."""
    a = np.arange(64, dtype=np.float64).reshape(8, 8)
    path = tet.write_dataset(tmp_path / "t.tet", "a", a, chunk_shape=(4, 4), codec="zstd")
    buf = path.read_bytes()
    cat = tet.layout.parse_catalog(buf, len(buf))
    (row,) = [i for i, e in enumerate(cat.entries) if list(e["chunk_index"][:2]) == [1, 0]]
    path.write_bytes(apply(buf, [(int(cat.entries[row]["payload_offset"]), 0x01)]))
    with tet.open(path) as f, pytest.raises(tet.ChunkError) as info:
        f.read_numpy("a")
    assert info.value.tile_index == 2  # chunk_index [1, 0] of a 2 x 2 grid
    assert "chunk_index=[1, 0]" in str(info.value) and "zstd decode failed" in str(info.value)
    with tet.open(path) as f:  # the tiles around it still read
        assert np.array_equal(f.read_numpy("a", selection=[{"start": 0, "stop": 4},
                                                           {"start": 0, "stop": 8}]), a[:4])
