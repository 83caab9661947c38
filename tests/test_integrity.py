"""Integrity you can verify: tile checksums, checksummed zstd frames, `verify --deep`.

- CRC-32C: the published test vectors (RFC 3720 B.4 and the "123456789" check
  value) through every SIMD body; every body equals a bit-by-bit reference and the
  scalar body on random lengths (0..3 × 8 KiB + tails) at every alignment 0..15,
  and continuing a crc equals checksumming the concatenation.
- The kernels: `crc32c_spans` over many spans of a buffer (one threaded call) equals
  crc32c span by span; `check_frames` decodes frames in a small window.
- Every writer path records a checksum table that matches the rows: write_dataset
  (raw, zstd), sessions with several datasets, streamed datasets (partial and never
  written tiles), a dataset declared after streaming began (the commit rebuilds the
  file), open_append (checksums carried from the old table, or computed when the old
  file has none), convert, from_xarray and transform sidecars; zstd frames carry the
  content checksum flag.
- Bit flips: in a raw tile and in a zstd frame, `verify --deep` fails and names the
  tile (exact text), the quick check catches a flip in the first 128 chunks only; a
  damaged tile copied by open_append is still caught (its old checksum is carried).
- zstd tiles larger than the decode budget are decoded in bounded steps (a damaged
  frame checksum at the end of a 16 MiB tile is found with a budget of 8 MiB),
  alone when the per-thread share is too small; only a budget below a frame's
  decoder state leaves it unchecked, with a warning.
- Files without a table (the reference corpus) verify ok with the "no checksum table"
  finding; a damaged table (bad magic, its own crc, rows that changed since) is an
  error finding that neither opening nor reading notices; an unknown version is a
  warning.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.verify
import tet.verify_checks
from tests.conftest import INTEROP
from tet import kernels, kernels_integrity, simd
from tet.integrity import encode_table, read_table
from tet.layout import parse_catalog
from tet.verify import NO_TABLE, verify

LEVELS = simd.simd_levels()
INTEROP_TETS = sorted(p for p in INTEROP.glob("*.tet") if p.name != "plan.tet")


def crc32c_bitwise(data: bytes, crc: int = 0) -> int:
    """The definition, one bit at a time (reflected 0x82F63B78, inverted in and out)."""
    r = crc ^ 0xFFFFFFFF
    for byte in data:
        r ^= byte
        for _ in range(8):
            r = (r >> 1) ^ (0x82F63B78 if r & 1 else 0)
    return r ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------
# CRC-32C


VECTORS = [
    (b"123456789", 0xE3069283),
    (b"", 0x00000000),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("data", "want"), VECTORS)
def test_crc32c_vectors(level: str, data: bytes, want: int) -> None:
    assert kernels_integrity.crc32c(data, level=level) == want
    assert crc32c_bitwise(data) == want


def test_crc32c_bodies_agree_on_lengths_and_alignments() -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 3 * 8192 * 2 + 64, dtype=np.uint8).tobytes()
    edges = [0, 1, 7, 8, 9, 255, 256, 257, 767, 768, 769, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1,
             3 * 8192 + 768 + 13, 2 * 3 * 8192 + 5]
    lengths = sorted({*edges, *(int(n) for n in rng.integers(0, 3 * 8192 * 2, 40))})
    for n in lengths:
        for a in range(16):
            piece = data[a : a + n]
            want = kernels_integrity.crc32c(piece, level="scalar")
            for level in LEVELS:
                assert kernels_integrity.crc32c(piece, level=level) == want, (level, n, a)
    for n in (0, 1, 5, 100, 1000):
        assert kernels_integrity.crc32c(data[:n], level="scalar") == crc32c_bitwise(data[:n])


@pytest.mark.parametrize("level", LEVELS)
def test_crc32c_continues(level: str) -> None:
    data = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    whole = kernels_integrity.crc32c(data, level=level)
    for cut in (0, 1, 8191, 24_576, 49_999, 50_000):
        head = kernels_integrity.crc32c(data[:cut], level=level)
        assert kernels_integrity.crc32c(data[cut:], crc=head, level=level) == whole
    assert crc32c_bitwise(data[1000:2000], crc32c_bitwise(data[:1000])) == \
        kernels_integrity.crc32c(data[:2000], level=level)


def test_crc32c_spans_match_one_by_one() -> None:
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 200_000, dtype=np.uint8)
    off = rng.integers(0, 150_000, 500).astype(np.uint64)
    length = rng.integers(0, 50_000, 500).astype(np.uint64)
    got = kernels_integrity.crc32c_spans(buf, buf.nbytes, off, length, threads=4)
    want = [kernels_integrity.crc32c(buf[int(o) : int(o) + int(n)], level="scalar")
            for o, n in zip(off, length)]
    assert got.dtype == np.uint32 and got.tolist() == want
    with pytest.raises(tet.TetError, match=r"span 1: \[199999, 200001\) is outside the file "
                                           r"of 200000 bytes"):
        kernels_integrity.crc32c_spans(buf, buf.nbytes, np.array([0, 199_999], np.uint64),
                             np.array([1, 2], np.uint64))


# ---------------------------------------------------------------------------
# every writer path records a table that matches its rows


def table_of(path: Path) -> np.ndarray[Any, Any]:
    """The file's checksum table, checked row by row against its stored bytes."""
    buf = path.read_bytes()
    cat = parse_catalog(buf, len(buf))
    table = read_table(buf, cat)
    assert table is not None and table.problem is None and table.crc is not None
    e = cat.entries
    want = [kernels_integrity.crc32c(buf[int(o) : int(o) + int(n)], level="scalar")
            for o, n in zip(e["payload_offset"], e["stored_byte_len"])]
    assert table.crc.tolist() == want
    assert table.offset == cat.payload_bound  # right after the payloads
    for o, c in zip(e["payload_offset"], e["codec"]):
        if c == 1:  # a zstd frame with Content_Checksum_flag (bit 2 of its descriptor)
            assert buf[int(o) : int(o) + 4] == b"\x28\xb5\x2f\xfd" and buf[int(o) + 4] & 4
    report = verify(path, deep=True)
    assert report.ok, report.to_dict()
    return table.crc


def finding(report: tet.verify.Report, check: str) -> list[str | None]:
    return [f.detail for f in report.findings if f.check == check]


ARR = np.arange(37 * 23, dtype=np.float32).reshape(37, 23) * 0.5


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_write_dataset_records_a_table(tmp_path: Path, codec: str) -> None:
    p = tmp_path / "w.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 5), codec=codec)
    assert len(table_of(p)) == 5 * 5
    assert finding(verify(p, deep=True), "chunk_checksums") == [
        "checked 25 chunk(s) against the checksum table (crc32c)"]


def test_session_streams_and_rebuild_record_tables(tmp_path: Path) -> None:
    p = tmp_path / "s.tet"
    with tet.TetWriter.create(p) as w:
        w.write_dataset("whole", ARR, chunk_shape=(10, 10), codec="zstd")
        s = w.create_dataset("streamed", (50, 37), "float64", chunk_shape=(8, 8), codec="zstd")
        s[0:20, :] = 1.5            # whole tiles and partial ones
        s[25:50, 0:30] = 2.5        # tiles never written are zeros
        r = w.create_dataset("raw", (100,), "uint16", chunk_shape=(7,))
        for i in range(0, 100, 13):
            r[i : i + 13] = np.arange(i, min(i + 13, 100))
        w.write_dataset("late", np.ones((4, 4), np.int16))  # declared after streaming began
    table_of(p)
    with tet.open(p) as f:
        assert f["raw"][:].tolist() == list(range(100))
        assert float(f["streamed"][:].sum()) == 20 * 37 * 1.5 + 25 * 30 * 2.5


def test_open_append_carries_checksums(tmp_path: Path) -> None:
    p = tmp_path / "a.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 8), codec="zstd")
    old = table_of(p)
    w = tet.TetWriter.open_append(p)
    w.write_dataset("b", ARR * 2, chunk_shape=(4, 4))
    w.commit()
    new = table_of(p)
    assert new[: len(old)].tolist() == old.tolist()


def test_open_append_computes_checksums_for_a_file_without_a_table(tmp_path: Path) -> None:
    p = tmp_path / "appended.tet"
    shutil.copy(INTEROP / "appended.tet", p)
    buf = p.read_bytes()
    assert read_table(buf, parse_catalog(buf, len(buf))) is None  # the reference wrote it
    w = tet.TetWriter.open_append(p)
    w.write_dataset("ours", np.arange(10, dtype=np.int32))
    w.commit()
    table_of(p)


def test_open_append_keeps_damage_visible(tmp_path: Path) -> None:
    """A tile damaged before the append keeps its old checksum: the new file's
    verify still names it, instead of certifying the damaged bytes."""
    p = tmp_path / "d.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 8))
    buf = bytearray(p.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    at = int(cat.entries["payload_offset"][3]) + 5
    buf[at] ^= 0x10
    p.write_bytes(bytes(buf))
    w = tet.TetWriter.open_append(p)
    w.write_dataset("b", np.zeros(3, np.uint8))
    w.commit()
    report = verify(p, deep=True)
    assert not report.ok
    (text,) = finding(report, "chunk_checksums")
    assert text is not None and text.startswith('chunk 3: dataset 0 ("a") chunk_index [1, 0]: ')


def test_convert_records_a_table(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="the convert extra (h5py) is not installed")
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as h:
        h["x"] = ARR
        h["g/y"] = np.arange(1000, dtype=np.int64)
    tet.convert(src, tmp_path / "out.tet", codec="zstd")
    table_of(tmp_path / "out.tet")


def test_from_xarray_records_a_table(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray", reason="the xarray extra is not installed")
    ds = xr.Dataset({"t": (("y", "x"), ARR)}, coords={"x": np.arange(23)})
    tet.from_xarray(ds, tmp_path / "x.tet")
    table_of(tmp_path / "x.tet")


def test_transform_sidecar_records_a_table(tmp_path: Path) -> None:
    p = tmp_path / "src.tet"
    tet.write_dataset(p, "x", ARR, chunk_shape=(8, 8))
    with tet.open(p) as f:
        res = f.transform.to_sidecar.zscore("x", timestamp=False)
    assert res.path is not None
    table_of(res.path)


# ---------------------------------------------------------------------------
# flipped bytes


def flip(path: Path, row: int, delta: int, *, out: Path | None = None) -> tuple[Path, int]:
    """Flip one bit `delta` bytes into the payload of `row`; returns (file, offset)."""
    buf = bytearray(path.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    at = int(cat.entries["payload_offset"][row]) + delta
    buf[at] ^= 0x04
    out = out or path.with_name("flipped.tet")
    out.write_bytes(bytes(buf))
    return out, at


def test_raw_flip_is_named_by_deep_verify(tmp_path: Path, cli: Any) -> None:
    p = tmp_path / "r.tet"
    tet.write_dataset(p, "temperature", ARR, chunk_shape=(8, 5))
    good = table_of(p)
    bad, _ = flip(p, 7, 3)
    with tet.open(bad) as f:  # the read path does no checksum work: the value just differs
        assert not np.array_equal(f.read_numpy("temperature"), ARR)
    cat = parse_catalog(bad.read_bytes(), bad.stat().st_size)
    a = int(cat.entries["payload_offset"][7])
    found = kernels_integrity.crc32c(bad.read_bytes()[a : a + 160])
    r = cli("verify", "--deep", bad)
    assert r.rc == 1
    text = (f'chunk 7: dataset 0 ("temperature") chunk_index [1, 2]: stored bytes [{a}, '
            f'{a + 160}) have crc32c 0x{found:08x}, the checksum table recorded '
            f'0x{int(good[7]):08x}')
    assert f"  chunk_checksums        FAIL ({text})" in r.out.splitlines()
    assert ("  [checksum_mismatch] Chunk payload bytes differ from the checksums recorded when "
            "the file was written.\n"
            "       → Restore the file from a backup or re-create it from its source; the tiles "
            "named are damaged.\n") in r.out
    assert "  chunk_decode           ok (decoded 25 chunk(s))" in r.out


def test_quick_verify_checks_the_first_128(tmp_path: Path) -> None:
    p = tmp_path / "q.tet"
    tet.write_dataset(p, "v", np.arange(160, dtype=np.float64), chunk_shape=(1,))
    late, _ = flip(p, 150, 2)
    quick = verify(late)
    assert quick.ok and finding(quick, "chunk_checksums") == [
        "checked 128 of 160 chunk(s) against the checksum table (crc32c)"]
    deep = verify(late, deep=True)
    assert not deep.ok
    (text,) = finding(deep, "chunk_checksums")
    assert text is not None and text.startswith('chunk 150: dataset 0 ("v") chunk_index [150]: ')
    early, _ = flip(p, 127, 0)
    quick = verify(early)
    assert not quick.ok
    (text,) = finding(quick, "chunk_checksums")
    assert text is not None and text.startswith("chunk 127: ")


def test_zstd_flip_is_named_by_verify_and_by_reads(tmp_path: Path) -> None:
    """Incompressible tiles are stored blocks: a flip changes the decoded values,
    which only the checksums see."""
    a = np.random.default_rng(2).integers(0, 2**32, (64, 64), dtype=np.uint32)
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "z", a, chunk_shape=(16, 16), codec="zstd")
    table_of(p)
    bad, _ = flip(p, 9, 400)
    report = verify(bad, deep=True)
    assert not report.ok
    (sums,) = finding(report, "chunk_checksums")
    assert sums is not None and sums.startswith('chunk 9: dataset 0 ("z") chunk_index [2, 1]: ')
    assert finding(report, "chunk_decode") == [
        "chunk 9: zstd decode failed: Restored data doesn't match checksum"]
    assert [r.code for r in report.recommendations] == ["checksum_mismatch",
                                                       "chunk_decode_failed"]
    with tet.open(bad) as f, pytest.raises(tet.ChunkError) as err:
        f.read_numpy("z")
    assert str(err.value) == ("read failed: dataset_id=0 chunk_index=[2, 1]: zstd decode "
                              "failed: Restored data doesn't match checksum")


def test_many_failures_are_listed_up_to_64(tmp_path: Path) -> None:
    p = tmp_path / "m.tet"
    tet.write_dataset(p, "m", np.arange(100, dtype=np.uint8), chunk_shape=(1,))
    buf = bytearray(p.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    for o in cat.entries["payload_offset"]:
        buf[int(o)] ^= 1
    p.write_bytes(bytes(buf))
    texts = finding(verify(p, deep=True), "chunk_checksums")
    assert len(texts) == 65
    assert [t.split(":")[0] for t in texts[:64] if t] == [f"chunk {i}" for i in range(64)]
    assert texts[64] == "36 more chunk(s) fail their checksum (the first 64 are listed)"


# ---------------------------------------------------------------------------
# big zstd tiles: decoded in bounded steps


def big_tile_file(tmp_path: Path) -> Path:
    """One 16 MiB zstd tile (its frame's window is 2 MiB at the default level)."""
    a = np.random.default_rng(5).integers(0, 1000, 4 * 1024 * 1024, dtype=np.int32)
    p = tmp_path / "big.tet"
    tet.write_dataset(p, "big", a, chunk_shape=(a.size,), codec="zstd")
    return p


@pytest.mark.parametrize(("threads", "budget"), [("1", 8 << 20), ("4", 4 << 20)])
def test_big_zstd_tile_is_decoded_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            threads: str, budget: int) -> None:
    """With 4 threads a 1 MiB share is too small for the frame: it is decoded again
    alone, with the whole budget."""
    monkeypatch.setenv("TET_THREADS", threads)
    monkeypatch.setattr(tet.verify_checks, "resolve_budget", lambda **kw: budget)
    p = big_tile_file(tmp_path)
    report = verify(p, deep=True)
    assert report.ok
    assert finding(report, "chunk_decode") == ["decoded 1 chunk(s)"]
    assert finding(report, "chunk_decode_memory") == []
    assert report.summary is not None and report.summary["deep_chunk_decode"] is True
    # the frame checksum sits in the last 4 bytes: only a full decode can see it
    buf = bytearray(p.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    end = int(cat.entries["payload_offset"][0] + cat.entries["stored_byte_len"][0])
    buf[end - 2] ^= 0x01
    p.write_bytes(bytes(buf))
    report = verify(p, deep=True)
    assert finding(report, "chunk_decode") == [
        "chunk 0: zstd decode failed: Restored data doesn't match checksum"]


def test_frame_bigger_than_the_whole_budget_is_reported(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tet.verify_checks, "resolve_budget", lambda **kw: 1 << 20)
    monkeypatch.setattr(tet.verify_checks, "WORK_FLOOR", 0)  # in use a budget is >= 64 MiB
    p = big_tile_file(tmp_path)
    report = verify(p, deep=True)
    assert report.ok  # a warning: the file is not known to be bad
    need = (2 << 20) + (128 << 10) + (256 << 10)  # window + one block + decoder state
    assert finding(report, "chunk_decode_memory") == [
        "decode-check skipped for 1 chunk(s) whose zstd frames need more decoder memory than "
        f"the budget of {1 << 20} bytes (largest {need} bytes; first chunk 0)"]
    assert finding(report, "chunk_decode") == [
        "decoded 0 of 1 chunk(s); 1 not decode-checked (chunk_decode_memory)"]
    assert report.summary is not None and report.summary["deep_chunk_decode"] is False


def test_check_frames_reports_each_frame() -> None:
    """Frames of one buffer, checked through a 4 KiB window: good, too long, too short,
    truncated, and too big for the allowed decoder memory."""
    a = np.arange(100_000, dtype=np.int32)
    origin = np.zeros((1, 1), np.int64)
    payload, _ = kernels.encode(a, origin, np.array([[a.size]]), codec=1, level=3)
    frame = payload.tobytes()
    buf = np.frombuffer(frame * 2 + frame[:-3], np.uint8)
    n = len(frame)
    off = np.array([0, n, 0, 2 * n, 0], np.uint64)
    stored = np.array([n, n, n, n - 3, n], np.uint64)
    raw = np.array([a.nbytes, a.nbytes + 4, a.nbytes, a.nbytes, a.nbytes], np.uint64)
    status, detail = kernels_integrity.check_frames(buf, buf.nbytes, off[:4], stored[:4], raw[:4],
                                          window=4096, max_need=1 << 30, threads=2)
    assert status.tolist()[0] == kernels_integrity.FRAME_OK
    assert kernels_integrity.frame_problem(int(status[1]), int(detail[1]), n, n, a.nbytes + 4) == (
        f"decoded payload length {a.nbytes} != raw_byte_len {a.nbytes + 4}")
    assert status[2] == kernels_integrity.FRAME_OK
    assert kernels_integrity.frame_problem(int(status[3]), int(detail[3]), 2 * n, n - 3,
                                           a.nbytes) == "zstd decode failed: Src size is incorrect"
    status, detail = kernels_integrity.check_frames(buf, buf.nbytes, off[4:], stored[4:], raw[4:],
                                          window=4096, max_need=1000, threads=1)
    assert status[0] == kernels_integrity.FRAME_TOO_BIG and int(detail[0]) > 1000


# ---------------------------------------------------------------------------
# files without a table, damaged tables


@pytest.mark.parametrize("path", INTEROP_TETS, ids=lambda p: p.name)
def test_reference_files_verify_without_a_table(path: Path) -> None:
    report = verify(path, deep=True)
    assert report.ok, report.to_dict()
    assert finding(report, "chunk_checksums") == [NO_TABLE]
    assert finding(report, "checksum_table") == []


def _table_span(path: Path) -> tuple[bytearray, int, int]:
    buf = bytearray(path.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    offset, length = cat.footer_refs["tet_checksums_ref"]
    return buf, offset, length


def _still_readable(path: Path) -> None:
    with tet.open(path) as f:
        assert np.array_equal(f.read_numpy("a"), ARR)
        assert f.mean("a") == pytest.approx(float(ARR.mean()))


def test_damaged_table_is_an_error_that_reads_ignore(tmp_path: Path, cli: Any) -> None:
    p = tmp_path / "t.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 8))
    buf, offset, length = _table_span(p)
    buf[offset + 30] ^= 0xFF  # inside a row's checksum
    p.write_bytes(bytes(buf))
    _still_readable(p)
    body = bytes(buf[offset : offset + length - 4])
    (stored,) = struct.unpack_from("<I", buf, offset + length - 4)
    report = verify(p, deep=True)
    assert not report.ok
    assert finding(report, "checksum_table") == [
        f"checksum table [{offset}, {offset + length}): its own crc32c is "
        f"0x{kernels_integrity.crc32c(body):08x}, the table says 0x{stored:08x}; tile "
        f"checksums not checked"]
    assert finding(report, "chunk_checksums") == []
    assert finding(report, "chunk_decode") == ["decoded 15 chunk(s)"]
    r = cli("verify", p)
    assert r.rc == 1 and ("  [checksum_table_invalid] The tile checksum table is damaged, so "
                          "tile checksums cannot be checked.\n") in r.out
    # a writer session rewrites the file with a fresh table
    w = tet.TetWriter.open_append(p)
    w.write_dataset("b", np.zeros(2, np.uint8))
    w.commit()
    table_of(p)


def test_table_magic_and_index_binding(tmp_path: Path) -> None:
    p = tmp_path / "t.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 8))
    buf, offset, length = _table_span(p)
    bad = bytearray(buf)
    bad[offset : offset + 4] = b"XCRC"
    (tmp_path / "magic.tet").write_bytes(bytes(bad))
    assert finding(verify(tmp_path / "magic.tet"), "checksum_table") == [
        f"checksum table [{offset}, {offset + length}): bad magic [88, 67, 82, 67] (expected "
        f"TCRC); tile checksums not checked"]
    # an index row changed after the table was written (its reserved field: reads do
    # not look at it, so only the binding to the index can tell)
    cat = parse_catalog(bytes(buf), len(buf))
    rows_at = cat.chunk_index_offset + 32
    bad = bytearray(buf)
    bad[rows_at + 104 * 2 + 100] = 1
    (tmp_path / "index.tet").write_bytes(bytes(bad))
    _still_readable(tmp_path / "index.tet")
    now = crc32c_bitwise(bytes(bad[rows_at : rows_at + 104 * len(cat.entries)]))
    (was,) = struct.unpack_from("<I", buf, offset + 12)
    assert finding(verify(tmp_path / "index.tet"), "checksum_table") == [
        f"checksum table [{offset}, {offset + length}): the chunk index rows have crc32c "
        f"0x{now:08x}, the table was written for rows with 0x{was:08x} (the index changed or "
        f"is damaged); tile checksums not checked"]


def test_unknown_table_version_is_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "t.tet"
    tet.write_dataset(p, "a", ARR, chunk_shape=(8, 8))
    buf, offset, length = _table_span(p)
    struct.pack_into("<I", buf, offset + 4, 2)
    p.write_bytes(bytes(buf))
    report = verify(p, deep=True)
    assert report.ok and report.recommendations == []
    (f,) = [f for f in report.findings if f.check == "checksum_table"]
    assert (f.severity, f.detail) == (
        "warning", f"checksum table [{offset}, {offset + length}): unsupported version 2 (this "
                   f"tet reads version 1); tile checksums not checked")


def test_table_blob_layout() -> None:
    """The blob byte for byte (the format tet/integrity.py documents)."""
    entries = np.zeros(2, dtype=tet.layout.ENTRY_DTYPE)
    entries["payload_offset"] = [240, 256]
    blob = encode_table(np.array([0x11223344, 0xAABBCCDD], np.uint32), entries)
    index_crc = crc32c_bitwise(entries.tobytes())
    body = b"TCRC" + struct.pack("<IIIQ", 1, 1, index_crc, 2) + bytes.fromhex("44332211ddccbbaa")
    assert blob == body + struct.pack("<I", crc32c_bitwise(body))


def test_footer_places_table_before_spill() -> None:
    history = [{"op": "write", "source": "x", "at": "1"}]
    meta = {"datasets": {"d": {"attrs": {f"k{i}": "v" * 1024 for i in range(64)}}}}
    out = tet.footer.encode_footer(history, meta, 1000, b"T" * 36)
    (json_len,) = struct.unpack_from("<Q", out, len(out) - 16)
    doc = json.loads(out[len(out) - 16 - json_len : len(out) - 16])
    assert doc["tet_checksums_ref"] == {"offset": 1000, "len": 36}
    assert doc["metadata_ref"]["offset"] == 1036
    assert out[:36] == b"T" * 36
    assert json.loads(out[36 : 36 + doc["metadata_ref"]["len"]])["datasets"] == meta["datasets"]
