"""Byte-level layout v1 checks of what our writer puts on disk (layout.md §§2-6, §9).

Everything here parses the bytes with `struct` on its own, independently of
`tet.layout.parse_catalog`, then also reads the file back through `tet.open`.

- §9 hex walk: f32 1..6, shape (2, 3), chunks (2, 2), name ``temperature``
  reproduces the upstream ``sample.tet`` bytes 0..12 and 16..368 exactly; only
  the superblock flags differ (1: our writer always adds its checksum table and
  a ``THST`` footer, which follow byte 368).
- §3.1 records: name lengths 1..17 (and a multi-byte UTF-8 name), alone and
  many records in one directory with rank 1..8: padding is zero and follows
  ``pad = (8 - (16 + name_len) % 8) % 8``, every shape array is 8-aligned,
  record length = ``align8(16 + name_len) + 16 * ndim``, ``chunk_index_offset ==
  align8(40 + dataset_blob_len)``, reserved fields are zero; §3.2 dtype tags.
- §4 index: TIDX header (version 1, entry count, execution settings, reserved
  zero), 104-byte rows with every field at its offset, chunk_index slots >= ndim
  zero, rows in catalog order with the last grid axis fastest, ragged edge
  ``raw_byte_len``; raw payloads back to back in index order right after the
  index, holding the tile's row-major LE bytes; zstd payloads back to back, each
  one zstd frame (declared content size, when present, == ``raw_byte_len``).
- §5 footer: tail = ``json_len`` u64, version u32 1, ``THST``; compact JSON,
  metadata maps sorted, history rows in wire key order; the §5.5 worked example
  through `tet.layout.encode_footer`; the 65 536-byte inline boundary and the
  ``metadata_ref`` spill path (written after the payloads, read back equal);
  MetadataLimitsV1 violations raise `tet.CatalogError` with the spec's texts.
- the checksum table (tet/integrity.py): right after the payloads, before any
  spill, named by ``tet_checksums_ref``; magic, version, algorithm, the crc32c of
  the index rows, the row count, one crc32c per row over its stored bytes and the
  blob's own crc32c, all at their offsets.
- §2 empty file: the 32-byte spec example (and one with a footer) parses to an
  empty catalog; session writers refuse to commit zero datasets.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import UPSTREAM
from tet import kernels_integrity
from tet.footer import encode_footer
from tet.layout import align8
from tet.limits import LIMITS

SAMPLE = UPSTREAM / "tet" / "sample.tet"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
TAGS = {
    "float32": 1, "float64": 2, "int32": 3, "int64": 4, "uint8": 5,
    "uint16": 6, "int16": 7, "uint32": 8, "float16": 9, "uint64": 10,
}


# ---------------------------------------------------------------------------
# an independent parser


def parse_bytes(buf: bytes) -> dict[str, Any]:
    """Superblock, records (with their offsets), index rows and footer of a file."""
    magic, version, count, flags, idx_off, idx_len = struct.unpack_from("<4sIIIQQ", buf, 0)
    out: dict[str, Any] = {
        "magic": magic, "layout_version": version, "dataset_count": count, "flags": flags,
        "chunk_index_offset": idx_off, "chunk_index_length": idx_len, "records": [],
        "entries": [],
    }
    if count:
        (blob_len,) = struct.unpack_from("<Q", buf, 32)
        out["dataset_blob_len"] = blob_len
        at = 40
        for _ in range(count):
            name_len, dtype, ndim, reserved = struct.unpack_from("<IIII", buf, at)
            name = buf[at + 16 : at + 16 + name_len]
            pad_at = at + 16 + name_len
            dims_at = at + align8(16 + name_len)
            dims = struct.unpack_from(f"<{2 * ndim}Q", buf, dims_at)
            rec_len = dims_at + 16 * ndim - at
            out["records"].append({
                "offset": at, "name_len": name_len, "dtype": dtype, "ndim": ndim,
                "reserved": reserved, "name": name.decode("utf-8"),
                "pad": buf[pad_at:dims_at], "dims_at": dims_at,
                "shape": dims[:ndim], "chunk_shape": dims[ndim:], "length": rec_len,
            })
            at += rec_len
        out["directory_end"] = at
        out["gap"] = buf[at:idx_off]
        tmagic, tver, n, bps, res16, budget, res64 = struct.unpack_from("<4sIQHHIQ", buf, idx_off)
        out["index"] = {"magic": tmagic, "version": tver, "entry_count": n, "bps": bps,
                        "reserved16": res16, "budget": budget, "reserved64": res64}
        for i in range(n):
            row = idx_off + 32 + 104 * i
            v = struct.unpack_from("<Q8QQQQII", buf, row)
            out["entries"].append({
                "at": row, "dataset_id": v[0], "chunk_index": list(v[1:9]),
                "payload_offset": v[9], "raw_byte_len": v[10], "stored_byte_len": v[11],
                "codec": v[12], "reserved": v[13],
            })
    if len(buf) >= 16 and buf[-4:] == b"THST":
        json_len, fver = struct.unpack_from("<QI", buf, len(buf) - 16)
        start = len(buf) - 16 - json_len
        out["footer"] = {"json_len": json_len, "version": fver, "start": start,
                         "text": buf[start : len(buf) - 16]}
        ref = json.loads(out["footer"]["text"]).get("tet_checksums_ref")
        if ref is not None:
            out["checksums"] = parse_checksums(buf, ref["offset"], ref["len"], out)
    return out


def crc32c(data: bytes) -> int:
    return kernels_integrity.crc32c(data, level="scalar")  # checked against test vectors elsewhere


def parse_checksums(buf: bytes, at: int, length: int, parsed: dict[str, Any]) -> dict[str, Any]:
    """The checksum table blob, every field checked against the bytes it describes."""
    magic, version, algorithm, index_crc, rows = struct.unpack_from("<4sIIIQ", buf, at)
    assert (magic, version, algorithm) == (b"TCRC", 1, 1)
    assert length == 24 + 4 * rows + 4 and rows == len(parsed["entries"])
    crcs = struct.unpack_from(f"<{rows}I", buf, at + 24)
    assert struct.unpack_from("<I", buf, at + length - 4)[0] == crc32c(buf[at : at + length - 4])
    first_row = parsed["chunk_index_offset"] + 32
    assert index_crc == crc32c(buf[first_row : first_row + 104 * rows])
    for e, crc in zip(parsed["entries"], crcs):
        assert crc == crc32c(buf[e["payload_offset"] : e["payload_offset"]
                                 + e["stored_byte_len"]])
    return {"offset": at, "len": length, "crcs": crcs}


Tile = tuple[tuple[int, ...], tuple[slice, ...]]


def tiles(shape: tuple[int, ...], chunk: tuple[int, ...]) -> list[Tile]:
    """(grid coords, slices) of every tile in linear grid order (last axis fastest)."""
    counts = tuple(-(-s // c) for s, c in zip(shape, chunk))
    return [
        (c, tuple(slice(i * k, min((i + 1) * k, n)) for i, k, n in zip(c, chunk, shape)))
        for c in np.ndindex(*counts)
    ]


def zstd_content_size(frame: bytes) -> int | None:
    """Frame_Content_Size of a zstd frame header, None when the frame omits it."""
    assert frame[:4] == ZSTD_MAGIC
    fhd = frame[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    value = int.from_bytes(frame[at : at + size], "little")
    return value + 256 if size == 2 else value


def write(path: Path, datasets: list[tuple[str, np.ndarray[Any, Any], tuple[int, ...]]],
          codec: str = "raw", **meta: Any) -> bytes:
    w = tet.TetWriter.create(path)
    for name, a, chunk in datasets:
        w.write_dataset(name, a, chunk_shape=chunk, codec=codec, **meta)
    w.commit()
    return path.read_bytes()


def sample_array() -> np.ndarray[Any, Any]:
    return np.arange(1, 7, dtype=np.float32).reshape(2, 3)


# ---------------------------------------------------------------------------
# §9 hex walk


def test_hex_walk_matches_upstream_sample(tmp_path: Path) -> None:
    ours = write(tmp_path / "s.tet", [("temperature", sample_array(), (2, 2))])
    ref = SAMPLE.read_bytes()
    assert len(ref) == 368
    assert ours[0:12] == ref[0:12]
    assert struct.unpack_from("<I", ref, 12)[0] == 0
    assert struct.unpack_from("<I", ours, 12)[0] == 1
    assert ours[16:368] == ref[16:368]
    # the checksum table follows the payloads directly, the footer runs from it to EOF
    p = parse_bytes(ours)
    table = p["checksums"]
    assert table["offset"] == 368 and table["len"] == 24 + 4 * 2 + 4
    assert p["footer"]["start"] == 368 + table["len"]
    assert p["footer"]["version"] == 1
    assert len(ours) == 368 + table["len"] + p["footer"]["json_len"] + 16


def test_hex_walk_fields(tmp_path: Path) -> None:
    """Spot-check the table of §9 on our own bytes."""
    b = write(tmp_path / "s.tet", [("temperature", sample_array(), (2, 2))])
    assert b[0x000:0x004] == b"TETR"
    assert b[0x004:0x008] == bytes.fromhex("01000000")
    assert b[0x008:0x00C] == bytes.fromhex("01000000")
    assert b[0x010:0x018] == bytes.fromhex("6800000000000000")
    assert b[0x018:0x020] == bytes.fromhex("F000000000000000")
    assert b[0x020:0x028] == bytes.fromhex("4000000000000000")
    assert b[0x028:0x038] == bytes.fromhex("0B000000" "01000000" "02000000" "00000000")
    assert b[0x038:0x043] == b"temperature"
    assert b[0x043:0x048] == b"\0" * 5
    assert struct.unpack_from("<4Q", b, 0x048) == (2, 3, 2, 2)
    assert b[0x068:0x070] == b"TIDX" + bytes.fromhex("01000000")
    assert struct.unpack_from("<Q", b, 0x070)[0] == 2
    assert b[0x078:0x088] == b"\0" * 16
    assert struct.unpack_from("<Q", b, 0x0D0)[0] == 0x158
    assert struct.unpack_from("<QQI", b, 0x0D8) == (16, 16, 0)
    assert struct.unpack_from("<Q", b, 0x0F0 + 72)[0] == 0x168
    assert b[0x158:0x168] == bytes.fromhex("0000803F" "00000040" "00008040" "0000A040")
    assert b[0x168:0x170] == bytes.fromhex("00004040" "0000C040")


def test_upstream_sample_parses_like_the_walk() -> None:
    p = parse_bytes(SAMPLE.read_bytes())
    assert p["chunk_index_offset"] == 104 and p["chunk_index_length"] == 240
    assert p["dataset_blob_len"] == 64
    assert [e["chunk_index"][:2] for e in p["entries"]] == [[0, 0], [0, 1]]
    assert [(e["payload_offset"], e["raw_byte_len"]) for e in p["entries"]] == [(344, 16), (360, 8)]
    assert "footer" not in p


# ---------------------------------------------------------------------------
# §3 records


@pytest.mark.parametrize("name_len", range(1, 18))
def test_record_padding_single(tmp_path: Path, name_len: int) -> None:
    name = "abcdefghijklmnopq"[:name_len]
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = write(tmp_path / "r.tet", [(name, a, (2, 3))])
    p = parse_bytes(b)
    (r,) = p["records"]
    pad = (8 - (16 + name_len) % 8) % 8
    assert r["offset"] == 40
    assert r["name_len"] == name_len and r["name"] == name
    assert r["pad"] == b"\0" * pad
    assert (16 + name_len + pad) % 8 == 0
    assert r["dims_at"] % 8 == 0
    assert r["length"] == align8(16 + name_len) + 16 * 2
    assert r["reserved"] == 0 and r["dtype"] == 3 and r["ndim"] == 2
    assert r["shape"] == (3, 4) and r["chunk_shape"] == (2, 3)
    assert p["dataset_blob_len"] == r["length"]
    assert p["chunk_index_offset"] == align8(40 + p["dataset_blob_len"])
    assert p["gap"] == b"\0" * (p["chunk_index_offset"] - p["directory_end"])
    with tet.open(tmp_path / "r.tet") as f:
        assert f.dataset_names() == [name]
        assert np.array_equal(f.read_numpy(name), a)


def test_record_padding_many_in_one_directory(tmp_path: Path) -> None:
    """17 records, name lengths 1..17, ranks cycling 1..8: every shape array 8-aligned."""
    specs = []
    for n in range(1, 18):
        ndim = (n - 1) % 8 + 1
        shape = tuple([2] * ndim)
        chunk = tuple([1] * (ndim - 1) + [2])
        specs.append(("abcdefghijklmnopq"[:n], np.full(shape, n, np.uint16), chunk))
    b = write(tmp_path / "m.tet", specs)
    p = parse_bytes(b)
    assert p["dataset_count"] == 17
    assert [r["name"] for r in p["records"]] == [s[0] for s in specs]
    at = 40
    for r, (name, a, chunk) in zip(p["records"], specs):
        name_len = len(name.encode())
        assert r["offset"] == at and r["offset"] % 8 == 0
        assert r["pad"] == b"\0" * ((8 - (16 + name_len) % 8) % 8)
        assert r["dims_at"] % 8 == 0
        assert r["length"] == align8(16 + name_len) + 16 * a.ndim
        assert r["shape"] == a.shape and r["chunk_shape"] == chunk
        assert r["reserved"] == 0 and r["dtype"] == 6
        at += r["length"]
    assert at == 40 + p["dataset_blob_len"]
    assert p["chunk_index_offset"] == align8(40 + p["dataset_blob_len"])
    with tet.open(tmp_path / "m.tet") as f:
        for name, a, _ in specs:
            assert np.array_equal(f.read_numpy(name), a)


def test_utf8_name_length_is_in_bytes(tmp_path: Path) -> None:
    name = "température/ß"
    b = write(tmp_path / "u.tet", [(name, np.arange(3, dtype=np.float64), (2,))])
    (r,) = parse_bytes(b)["records"]
    assert r["name_len"] == len(name.encode("utf-8")) == len(name) + 2
    assert r["name"] == name
    assert r["length"] == align8(16 + r["name_len"]) + 16
    with tet.open(tmp_path / "u.tet") as f:
        assert f.dataset_names == (name,)


@pytest.mark.parametrize("dtype", [*TAGS, "bool"])
def test_dtype_tags_and_le_payload(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(7)
    a = (rng.integers(0, 2, size=(3, 5)).astype(bool) if dtype == "bool"
         else (rng.random((3, 5)) * 100).astype(dtype))
    b = write(tmp_path / "d.tet", [("v", a, (2, 5))])
    p = parse_bytes(b)
    assert p["records"][0]["dtype"] == TAGS.get(dtype, 5)
    le = a.astype("u1") if dtype == "bool" else a.astype(a.dtype.newbyteorder("<"))
    for e, (_, sl) in zip(p["entries"], tiles(a.shape, (2, 5))):
        want = np.ascontiguousarray(le[sl]).tobytes()
        assert b[e["payload_offset"] : e["payload_offset"] + e["stored_byte_len"]] == want
    with tet.open(tmp_path / "d.tet") as f:
        got = f.read_numpy("v")
    assert np.array_equal(got, a.astype("u1") if dtype == "bool" else a)


# ---------------------------------------------------------------------------
# §4 index and payloads


GEOMETRY = [
    ("alpha", np.arange(35, dtype=np.float32).reshape(5, 7), (2, 3)),
    ("b", (np.arange(120, dtype=np.int64) - 60).reshape(4, 5, 6), (3, 2, 4)),
    ("gamma1", np.arange(11, dtype=np.uint8), (4,)),
    ("d8", np.arange(2 * 3 * 1 * 2 * 1 * 2 * 1 * 3, dtype=np.int16).reshape(2, 3, 1, 2, 1, 2, 1, 3),
     (1, 2, 1, 1, 1, 2, 1, 2)),
]


def _check_index(b: bytes, datasets: list[tuple[str, np.ndarray[Any, Any], tuple[int, ...]]],
                 codec: int) -> dict[str, Any]:
    p = parse_bytes(b)
    idx = p["index"]
    assert idx["magic"] == b"TIDX" and idx["version"] == 1
    assert idx["reserved16"] == 0 and idx["reserved64"] == 0
    expected_rows = []
    for i, (_, a, chunk) in enumerate(datasets):
        for c, sl in tiles(a.shape, chunk):
            expected_rows.append((i, c, a, sl))
    assert idx["entry_count"] == len(expected_rows) == len(p["entries"])
    assert p["chunk_index_length"] == 32 + 104 * len(expected_rows)
    at = p["chunk_index_offset"] + p["chunk_index_length"]
    for e, (i, c, a, sl) in zip(p["entries"], expected_rows):
        ndim = a.ndim
        assert e["dataset_id"] == i
        assert e["chunk_index"][:ndim] == list(c)
        assert e["chunk_index"][ndim:] == [0] * (8 - ndim)
        tile = np.ascontiguousarray(a[sl])
        assert e["raw_byte_len"] == tile.nbytes == math.prod(tile.shape) * a.itemsize
        assert e["codec"] == codec and e["reserved"] == 0
        if codec == 0:  # a raw tile starts at the next multiple of its element size
            at = -(-at // a.itemsize) * a.itemsize
        assert e["payload_offset"] == at  # back to back (but for that), index order
        stored = b[at : at + e["stored_byte_len"]]
        if codec == 0:
            assert e["stored_byte_len"] == e["raw_byte_len"]
            assert stored == tile.tobytes()
        else:
            assert stored[:4] == ZSTD_MAGIC
            fcs = zstd_content_size(stored)
            assert fcs is None or fcs == e["raw_byte_len"]
        at += e["stored_byte_len"]
    p["payload_end"] = at
    return p


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_index_rows_and_payloads(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "g.tet"
    b = write(path, GEOMETRY, codec=codec)
    p = _check_index(b, GEOMETRY, {"raw": 0, "zstd": 1}[codec])
    table = p["checksums"]
    assert table["offset"] == p["payload_end"]  # no gap before the table and the footer
    assert p["footer"]["start"] == p["payload_end"] + table["len"]
    assert len(b) == p["payload_end"] + table["len"] + p["footer"]["json_len"] + 16
    with tet.open(path) as f:
        s = f.summary()
        assert [row["payload_offset"] for row in s["chunks"]] == [
            e["payload_offset"] for e in p["entries"]]
        for name, a, _ in GEOMETRY:
            assert np.array_equal(f.read_numpy(name), a)


@pytest.mark.parametrize("codec", ["raw", "zstd"])
@pytest.mark.parametrize("window", [1, 1000, 4096])
def test_payloads_across_encode_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, window: int
) -> None:
    """Payloads encoded a window of tiles at a time stay back to back and in order."""
    import tet.writer_stream

    monkeypatch.setattr(tet.writer_stream, "WINDOW_BYTES", window)
    path = tmp_path / "w.tet"
    b = write(path, GEOMETRY, codec=codec)
    p = _check_index(b, GEOMETRY, {"raw": 0, "zstd": 1}[codec])
    assert p["checksums"]["offset"] == p["payload_end"]
    assert p["footer"]["start"] == p["payload_end"] + p["checksums"]["len"]
    with tet.open(path) as f:
        for name, a, _ in GEOMETRY:
            assert np.array_equal(f.read_numpy(name), a)


def test_big_endian_and_strided_input(tmp_path: Path) -> None:
    """Whatever the input layout, payloads hold little-endian row-major tiles."""
    base = np.arange(48, dtype=np.int64).reshape(6, 8) * 1_000_003
    specs = [
        ("be", base.astype(">i4"), (4, 3)),
        ("strided", base[::2, ::3].astype("<f8"), (2, 2)),
        ("fortran", np.asfortranarray(base.astype("<u2")), (5, 5)),
    ]
    b = write(tmp_path / "le.tet", specs)
    p = parse_bytes(b)
    rows = iter(p["entries"])
    for _, a, chunk in specs:
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        for _, sl in tiles(a.shape, chunk):
            e = next(rows)
            got = b[e["payload_offset"] : e["payload_offset"] + e["stored_byte_len"]]
            assert got == np.ascontiguousarray(le[sl]).tobytes()
    with tet.open(tmp_path / "le.tet") as f:
        for name, a, _ in specs:
            out = f.read_numpy(name)
            assert out.dtype == a.dtype.newbyteorder("<")
            assert np.array_equal(out, a)


def test_index_entry_field_offsets(tmp_path: Path) -> None:
    """Each field of a 104-byte row sits at its documented relative offset."""
    a = np.arange(2 * 3 * 5, dtype=np.float64).reshape(2, 3, 5)
    b = write(tmp_path / "e.tet", [("x", a, (1, 2, 2))])
    p = parse_bytes(b)
    for k, e in enumerate(p["entries"]):
        row = b[e["at"] : e["at"] + 104]
        assert len(row) == 104
        assert int.from_bytes(row[0:8], "little") == 0
        assert [int.from_bytes(row[8 + 8 * j : 16 + 8 * j], "little") for j in range(8)] == \
            e["chunk_index"]
        assert int.from_bytes(row[72:80], "little") == e["payload_offset"]
        assert int.from_bytes(row[80:88], "little") == e["raw_byte_len"]
        assert int.from_bytes(row[88:96], "little") == e["stored_byte_len"]
        assert row[96:100] == b"\0\0\0\0" and row[100:104] == b"\0\0\0\0"
        assert e["at"] == p["chunk_index_offset"] + 32 + 104 * k
    # ragged edges: axis 1 (3 over 2) and axis 2 (5 over 2)
    assert [e["raw_byte_len"] // 8 for e in p["entries"][:6]] == [4, 4, 2, 2, 2, 1]


def test_execution_settings_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.tet"
    w = tet.TetWriter.create(path)
    w.write_dataset("a", np.arange(4, dtype=np.int32), chunk_shape=(2,))
    w.set_execution(memory_budget_bytes=123_456, memory_budget_percent_bps=5_000)
    w.commit()
    b = path.read_bytes()
    off = parse_bytes(b)["chunk_index_offset"]
    assert b[off + 16 : off + 32] == struct.pack("<HHIQ", 5_000, 0, 123_456, 0)
    with tet.open(path) as f:
        assert f.summary()["file_execution"] == {"memory_budget_percent_bps": 5_000,
                                                  "memory_budget_bytes": 123_456}


# ---------------------------------------------------------------------------
# §5 footer


def test_worked_footer_tail_example() -> None:
    row = {"op": "write", "source": "out.tet", "at": "1700000000"}
    out = encode_footer([row], {}, 1234)
    text = b'{"history":[{"op":"write","source":"out.tet","at":"1700000000"}]}'
    assert len(text) == 65
    assert out == text + bytes.fromhex("4100000000000000" "01000000" "54485354")


def test_encode_footer_nothing_to_write() -> None:
    assert encode_footer([], {}, 100) == b""


def _is_sorted_maps(v: Any) -> bool:
    if isinstance(v, dict):
        return list(v) == sorted(v) and all(_is_sorted_maps(x) for x in v.values())
    if isinstance(v, list):
        return all(_is_sorted_maps(x) for x in v)
    return True


def test_footer_tail_and_compact_sorted_json(tmp_path: Path) -> None:
    path = tmp_path / "f.tet"
    w = tet.TetWriter.create(path)
    w.write_dataset("zeta", np.zeros((3, 2), np.float32), chunk_shape=(2, 2),
                    attrs={"units": "K", "_FillValue": -9999, "b": 1.5, "a": True},
                    dim_names=["time", "station"],
                    coords={"time": ["t0", "t1", "t2"], "station": ["s0", "s1"]})
    w.write_dataset("alpha", np.ones(4, np.int16), chunk_shape=(3,), attrs={"k": "v"})
    w.push_history_event("convert", "h5", parents=["p1", "p0"], params={"z": "1", "a": "2"})
    w.commit()
    b = path.read_bytes()
    assert b[-4:] == b"THST"
    json_len, version = struct.unpack_from("<QI", b, len(b) - 16)
    assert version == 1
    assert struct.unpack_from("<I", b, 12)[0] == 1
    text = b[len(b) - 16 - json_len : len(b) - 16]
    doc = json.loads(text)
    assert json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() == text
    assert b" " not in text.replace(b"tet-py", b"")
    assert list(doc) == ["history", "metadata", "tet_checksums_ref"]
    assert _is_sorted_maps(doc["metadata"])
    (row,) = doc["history"]
    assert list(row) == ["op", "source", "at", "parents", "params"]
    assert row["parents"] == ["p1", "p0"]          # arrays keep their order
    assert list(row["params"]) == ["a", "z"]       # string maps sorted
    assert row["at"].isdigit()
    meta = doc["metadata"]
    assert meta["datasets"]["zeta"]["attrs"] == {"_FillValue": "-9999", "a": "true", "b": "1.5",
                                                 "units": "K"}
    assert meta["datasets"]["zeta"]["dim_names"] == ["time", "station"]
    assert meta["datasets"]["zeta"]["coords"] == {"station": {"labels": ["s0", "s1"]},
                                                  "time": {"labels": ["t0", "t1", "t2"]}}
    assert meta["file"]["tool"] == "tet-py"
    with tet.open(path) as f:
        assert f.metadata == meta
        assert f.history == doc["history"]


def _spill_attrs(n: int = 64, size: int = 1000) -> dict[str, str]:
    return {f"k{i:02d}": chr(ord("a") + i % 26) * size for i in range(n)}


def test_metadata_spill_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "spill.tet"
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    attrs = _spill_attrs()
    w = tet.TetWriter.create(path)
    w.write_dataset("grid", a, chunk_shape=(2, 4), attrs=attrs, dim_names=["r", "c"])
    w.write_dataset("small", np.arange(3, dtype=np.int16), chunk_shape=(2,),
                    attrs={"x": "y" * 1024})
    w.commit()
    b = path.read_bytes()
    p = _check_index(b, [("grid", a, (2, 4)), ("small", np.arange(3, dtype=np.int16), (2,))], 0)
    foot = p["footer"]
    assert foot["json_len"] <= LIMITS["footer_json_bytes"]
    doc = json.loads(foot["text"])
    assert list(doc) == ["history", "metadata_ref", "tet_checksums_ref"]
    ref = doc["metadata_ref"]
    assert set(ref) == {"offset", "len"}
    table = doc["tet_checksums_ref"]
    assert table == {"offset": p["payload_end"], "len": p["checksums"]["len"]}
    assert ref["offset"] == p["payload_end"] + table["len"]  # spill follows the table
    assert ref["offset"] + ref["len"] == foot["start"]     # and precedes the history JSON
    assert len(b) == p["payload_end"] + table["len"] + ref["len"] + foot["json_len"] + 16
    spilled = json.loads(b[ref["offset"] : ref["offset"] + ref["len"]])
    assert spilled["datasets"]["grid"]["attrs"] == attrs
    assert _is_sorted_maps(spilled)
    assert len(json.dumps({"history": doc["history"], "metadata": spilled},
                          separators=(",", ":")).encode()) > LIMITS["footer_json_bytes"]
    with tet.open(path) as f:
        assert f.metadata == spilled
        assert f["grid"].attrs == attrs
        assert f["grid"].dim_names == ("r", "c")
        assert np.array_equal(f.read_numpy("grid"), a)
        assert f.summary()["metadata"] == spilled


def _inline_len(value_len: int) -> tuple[int, bytes]:
    history = [{"op": "write", "source": "x", "at": "1"}]
    attrs = _spill_attrs(63, 1020)
    attrs["zz"] = "q" * value_len
    meta = {"datasets": {"d": {"attrs": attrs}}}
    out = encode_footer(history, meta, 4096)
    (json_len,) = struct.unpack_from("<Q", out, len(out) - 16)
    return json_len, out


def test_inline_boundary_is_65536_bytes() -> None:
    base, _ = _inline_len(100)
    assert base < LIMITS["footer_json_bytes"]
    exact = 100 + LIMITS["footer_json_bytes"] - base
    assert 1 <= exact <= 1024
    n, out = _inline_len(exact)
    assert n == LIMITS["footer_json_bytes"]
    doc = json.loads(out[: n])
    assert "metadata" in doc and "metadata_ref" not in doc
    assert len(out) == n + 16
    n2, out2 = _inline_len(exact + 1)
    doc2 = json.loads(out2[len(out2) - 16 - n2 : len(out2) - 16])
    assert "metadata_ref" in doc2 and "metadata" not in doc2
    assert doc2["metadata_ref"]["offset"] == 4096
    assert doc2["metadata_ref"]["len"] == len(out2) - 16 - n2


# -- limits (§5.2) ----------------------------------------------------------


def _commit_with(path: Path, **kw: Any) -> None:
    w = tet.TetWriter.create(path)
    shape = kw.pop("shape", (4,))
    w.write_dataset("d", np.zeros(shape, np.float32), **kw)
    w.commit()


LIMIT_CASES = [
    ("attr value 1025 bytes", {"attrs": {"k": "v" * 1025}},
     "metadata string exceeds attr_string_bytes limit"),
    ("attr value 1026 UTF-8 bytes in 342 chars", {"attrs": {"k": "€" * 342}},
     "metadata string exceeds attr_string_bytes limit"),
    ("attr key 1025 bytes", {"attrs": {"k" * 1025: "v"}},
     "metadata string exceeds attr_string_bytes limit"),
    ("coord label 1025 bytes", {"coords": {"0": ["l" * 1025]}},
     "metadata string exceeds attr_string_bytes limit"),
    ("dim name 1025 bytes", {"dim_names": ["n" * 1025]},
     "metadata string exceeds attr_string_bytes limit"),
    ("65 attrs", {"attrs": {f"k{i}": "v" for i in range(65)}},
     "metadata attrs exceeds dataset_attrs limit"),
    ("65 coord labels", {"shape": (70,), "coords": {"0": [f"l{i}" for i in range(65)]}},
     "metadata coord labels exceeds coord_labels_per_axis limit"),
    ("empty attr value", {"attrs": {"k": ""}}, "non-empty"),
    ("empty coord label", {"coords": {"0": ["a", ""]}}, "non-empty"),
]


@pytest.mark.parametrize("kw,text", [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
def test_metadata_limits_refused(tmp_path: Path, kw: dict[str, Any], text: str) -> None:
    path = tmp_path / "lim.tet"
    with pytest.raises(tet.CatalogError, match=text):
        _commit_with(path, **kw)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_metadata_at_limits_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ok.tet"
    attrs = {f"{i:02d}" + "k" * 1022: "v" * 1024 for i in range(64)}
    _commit_with(path, shape=(64,), attrs=attrs, dim_names=["n" * 1024],
                 coords={"n" * 1024: ["€" * 341 + "a"] * 64})
    with tet.open(path) as f:
        assert f["d"].attrs == attrs
        assert f.metadata["datasets"]["d"]["coords"]["n" * 1024]["labels"] == ["€" * 341 + "a"] * 64


def test_metadata_datasets_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.tet"
    w = tet.TetWriter.create(path)
    for i in range(257):
        w.write_dataset(f"d{i}", np.zeros(1, np.uint8), chunk_shape=(1,), attrs={"i": i})
    with pytest.raises(tet.CatalogError, match="metadata datasets exceeds metadata_datasets limit"):
        w.commit()
    assert not path.exists()
    w = tet.TetWriter.create(path)
    for i in range(256):
        w.write_dataset(f"d{i}", np.zeros(1, np.uint8), chunk_shape=(1,), attrs={"i": i})
    w.commit()
    with tet.open(path) as f:
        assert len(f.metadata["datasets"]) == 256
        assert f["d255"].attrs == {"i": "255"}


def test_history_limits(tmp_path: Path) -> None:
    path = tmp_path / "hist.tet"
    cases: list[tuple[Any, str]] = [
        (lambda w: w.push_history_event("op", "s" * 1025),
         "metadata string exceeds attr_string_bytes limit"),
        (lambda w: [w.push_history_event("op", f"s{i}") for i in range(4097)],
         "history events exceeds history_events limit"),
        (lambda w: w.push_history_event("op", "s", parents=[f"p{i}" for i in range(17)]),
         "history parents exceeds history_parents limit"),
        (lambda w: w.push_history_event("op", "s", params={f"k{i}": "v" for i in range(33)}),
         "history params exceeds history_params limit"),
        (lambda w: [w.push_history_event("op", f"{i:04d}" + "s" * 1000) for i in range(70)],
         "footer JSON exceeds footer_json_bytes limit even without inline metadata"),
    ]
    for push, text in cases:
        w = tet.TetWriter.create(path)
        w.write_dataset("d", np.zeros(2, np.float32))
        push(w)
        with pytest.raises(tet.CatalogError, match=text):
            w.commit()
        assert not path.exists()
        assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# §2 empty file

EMPTY = bytes.fromhex(
    "54455452 01000000 00000000 00000000 2000000000000000 0000000000000000".replace(" ", ""))


def test_empty_file_spec_bytes(tmp_path: Path) -> None:
    assert len(EMPTY) == 32
    path = tmp_path / "empty.tet"
    path.write_bytes(EMPTY)
    with tet.open(path) as f:
        assert f.datasets() == [] and f.dataset_names == () and len(f) == 0
        s = f.summary()
        assert s["superblock"] == {"layout_version": 1, "dataset_count": 0, "flags": 0,
                                   "chunk_index_offset": 32, "chunk_index_length": 0}
        assert s["datasets"] == [] and s["chunks"] == []
        assert s["file_execution"] == {"memory_budget_percent_bps": 0, "memory_budget_bytes": 0}
        assert s["history"] == [] and s["metadata"] == {}
        with pytest.raises(tet.UnknownDatasetError):
            f.read_numpy("anything")


def test_empty_file_with_footer(tmp_path: Path) -> None:
    row = {"op": "write", "source": "e", "at": "5"}
    meta = {"file": {"tool": "t"}}
    head = bytearray(EMPTY)
    struct.pack_into("<I", head, 12, 1)
    path = tmp_path / "empty_footer.tet"
    path.write_bytes(bytes(head) + encode_footer([row], meta, 32))
    with tet.open(path) as f:
        assert f.datasets() == []
        assert f.history == [row]
        assert f.metadata == meta


def test_writer_refuses_zero_datasets(tmp_path: Path) -> None:
    path = tmp_path / "none.tet"
    with pytest.raises(tet.CatalogError, match="at least one dataset is required"):
        tet.TetWriter.create(path).commit()
    assert not path.exists()
