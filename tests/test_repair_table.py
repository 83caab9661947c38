"""`tet repair --apply footer_invalid` must not launder damage: a sound tile checksum
table after the payloads is kept, with a minimal footer naming it, so `verify --deep`
still names a tile damaged before the footer broke.  A table that is not sound (its own
crc32c, its row count, or the crc32c of the rows it was written for) is dropped as any
other footer region, and a file without one is repaired as before."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP, CliRun
from tests.helpers import with_footer
from tet.footer import CHECKSUMS_KEY
from tet.integrity import table_length
from tet.layout import FLAG_FOOTER
from tet.verify import footer_table, repair, verify

Cli = Callable[..., CliRun]


def _source(tmp_path: Path, *, spill: bool = False) -> Path:
    """Ten raw tiles of `a`, ten zstd tiles of `z` (and a metadata spill)."""
    path = tmp_path / "l0.tet"
    big = {f"k{i}": "v" * 1000 for i in range(60)} if spill else {}
    with tet.TetWriter.create(path) as w:
        w.write_dataset("a", np.arange(100, dtype="f8"), chunk_shape=(10,), attrs=big)
        w.write_dataset("z", np.random.default_rng(0).random(100), chunk_shape=(10,),
                        codec="zstd", attrs={"units": "K", **big})
    return path


def _refs(path: Path) -> tuple[int, dict[str, tuple[int, int]], np.ndarray]:
    with tet.open(path) as f:
        return f.catalog.payload_bound, dict(f.catalog.footer_refs), f.catalog.entries.copy()


def _damage_tile(path: Path, row: int) -> None:
    _, _, entries = _refs(path)
    b = bytearray(path.read_bytes())
    b[int(entries["payload_offset"][row]) + 3] ^= 0x01
    path.write_bytes(bytes(b))


def _break_footer(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[-20] = ord("#")  # inside the footer JSON: it no longer parses
    path.write_bytes(bytes(b))


def _stub(end: int, length: int) -> bytes:
    text = json.dumps({"history": [], CHECKSUMS_KEY: {"offset": end, "len": length}},
                      separators=(",", ":")).encode()
    return text + struct.pack("<QI4s", len(text), 1, b"THST")


def _errors(report: tet.verify.Report) -> list[tuple[str, str | None]]:
    return [(f.check, f.detail) for f in report.findings if f.failed]


@pytest.mark.parametrize("spill", [False, True])
def test_a_damaged_raw_tile_stays_visible_after_the_repair(tmp_path: Path, cli: Cli,
                                                           spill: bool) -> None:
    src = _source(tmp_path, spill=spill)
    end, refs, _ = _refs(src)
    table = refs[CHECKSUMS_KEY]
    assert table == (end, table_length(20))
    p = tmp_path / "l2.tet"
    shutil.copy(src, p)
    _damage_tile(p, 1)
    _break_footer(p)
    before = p.read_bytes()
    assert footer_table(before, len(before)) == table
    r = cli("repair", p, "--apply", "footer_invalid", "--dry-run")
    assert r.rc == 0 and p.read_bytes() == before
    kept = (f"the tile checksum table [{end}, {end + table[1]}) and a minimal footer naming it "
            f"({len(_stub(*table)) + table[1]} bytes in all)")
    assert f"would truncate to {end} bytes and write back {kept} (from {len(before)} bytes)" \
        in r.out
    r = cli("repair", p, "--apply", "footer_invalid")
    assert r.rc == 1  # the repair is done; the damaged tile is still reported
    assert f"truncated to {end} bytes and wrote back {kept}" in r.out
    assert "verify_after: failed" in r.out
    after = p.read_bytes()
    assert after == before[: end + table[1]] + _stub(*table)
    assert struct.unpack_from("<I", after, 12)[0] & FLAG_FOOTER
    report = verify(p, deep=True)
    assert [c for c, _ in _errors(report)] == ["chunk_checksums"]
    detail = _errors(report)[0][1]
    assert detail is not None and detail.startswith('chunk 1: dataset 0 ("a") chunk_index [1]: ')
    with tet.open(p) as f, tet.open(src) as g:
        assert f.metadata == {} and f.history == []
        assert np.array_equal(f.read_numpy("z"), g.read_numpy("z"))
        got, want = f.read_numpy("a"), g.read_numpy("a")
        assert np.array_equal(np.delete(got, range(10, 20)), np.delete(want, range(10, 20)))
        assert not np.array_equal(got[10:20], want[10:20])  # the damage itself


def test_a_damaged_zstd_tile_and_an_undamaged_file(tmp_path: Path) -> None:
    src = _source(tmp_path)
    end, refs, _ = _refs(src)
    p = tmp_path / "z.tet"
    shutil.copy(src, p)
    _damage_tile(p, 12)
    _break_footer(p)
    out = repair(p, ["footer_invalid"])
    assert out.actions[0].applied and out.verify_after_ok is False
    assert sorted({c for c, _ in _errors(verify(p, deep=True))}) == [
        "chunk_checksums", "chunk_decode"]
    good = tmp_path / "good.tet"
    shutil.copy(src, good)
    _break_footer(good)
    out = repair(good, ["footer_invalid"])
    assert out.actions[0].applied and out.verify_after_ok is True
    checked = [f.detail for f in verify(good, deep=True).findings if f.check == "chunk_checksums"]
    assert checked == ["checked 20 chunk(s) against the checksum table (crc32c)"]
    assert good.read_bytes() == src.read_bytes()[: end + refs[CHECKSUMS_KEY][1]] + _stub(
        *refs[CHECKSUMS_KEY])


@pytest.mark.parametrize("what", ["table bytes", "table crc", "index rows", "row count"])
def test_a_table_that_is_not_sound_is_dropped(tmp_path: Path, what: str) -> None:
    """Keeping a table that does not describe these rows would make every tile fail (or
    hide nothing): it goes, as before, and the flag is cleared."""
    src = _source(tmp_path)
    _, refs, _ = _refs(src)
    start, length = refs[CHECKSUMS_KEY]
    p = tmp_path / "bad.tet"
    b = bytearray(src.read_bytes())
    if what == "table bytes":
        b[start + 30] ^= 0xFF  # a per-row crc: the table's own crc32c no longer holds
    elif what == "table crc":
        b[start + length - 1] ^= 0xFF
    elif what == "index rows":
        with tet.open(src) as f:
            at = f.catalog.chunk_index_offset + 32 + 104 * 5 + 100  # row 5's reserved u32
        b[at] ^= 0x01
    else:
        struct.pack_into("<Q", b, start + 16, 19)
    p.write_bytes(bytes(b))
    _break_footer(p)
    data = p.read_bytes()
    assert footer_table(data, len(data)) is None
    json_at = len(data) - 16 - struct.unpack_from("<Q", data, len(data) - 16)[0]
    out = repair(p, ["footer_invalid"])
    assert out.actions[0].message == (f"truncated to {json_at} bytes and cleared history "
                                      "footer flag")
    assert p.read_bytes()[16:] == data[16:json_at]
    assert not struct.unpack_from("<I", p.read_bytes(), 12)[0] & FLAG_FOOTER


def test_a_footer_pointing_into_the_payloads_loses_none(tmp_path: Path) -> None:
    """A footer that still parses may point its table anywhere (here: at a payload, so
    cutting there would lose tiles): the sound table after the payloads is what counts."""
    src = _source(tmp_path)
    end, refs, entries = _refs(src)
    b = bytearray(src.read_bytes())
    json_len = struct.unpack_from("<Q", b, len(b) - 16)[0]
    body = bytes(b[: len(b) - 16 - json_len])
    start, length = refs[CHECKSUMS_KEY]
    inside = int(entries["payload_offset"][3])
    doc = json.dumps({"history": 5, CHECKSUMS_KEY: {"offset": inside, "len": length}}).encode()
    p = tmp_path / "ptr.tet"
    p.write_bytes(body + doc + struct.pack("<QI4s", len(doc), 1, b"THST"))
    data = p.read_bytes()
    assert footer_table(data, len(data)) == (start, length)  # found where the writer puts it
    out = repair(p, ["footer_invalid"])
    assert out.actions[0].message.startswith(f"truncated to {end} bytes and wrote back ")
    assert out.verify_after_ok is True
    with tet.open(p) as f, tet.open(src) as g:
        assert np.array_equal(f.read_numpy("a"), g.read_numpy("a"))


def test_a_file_without_a_table_is_repaired_as_before(tmp_path: Path) -> None:
    sample = (INTEROP / "sample.tet").read_bytes()
    doc = b'{"history": 7}'
    p = tmp_path / "ref.tet"
    p.write_bytes(with_footer(sample, doc, flags=FLAG_FOOTER))
    data = p.read_bytes()
    assert footer_table(data, len(data)) is None
    out = repair(p, ["footer_invalid"])
    assert out.actions[0].message == (f"truncated to {len(sample)} bytes and cleared history "
                                      "footer flag")
    assert p.read_bytes()[16:] == sample[16:] and out.verify_after_ok is True
