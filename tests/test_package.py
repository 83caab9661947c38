"""Packages on a local filesystem: the layout `create`/`ingest`/`publish` leave, pinning at
open (``CURRENT`` and ``?generation=N``), `pack`, region claims, `log` and `prune`, and
each refusal's type and text."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import tet
from tests.packages import part
from tet.package_admin import packed_digest


def _pkg(tmp_path: Path) -> Path:
    return tet.create(tmp_path / "p.tet.d")


def test_create_makes_the_layout_and_no_current(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    assert sorted(os.listdir(pkg)) == ["PROTOCOL", "generations", "publishing", "staging"]
    doc = json.loads((pkg / "PROTOCOL").read_text())
    assert list(doc) == ["protocol_version", "created_unix"] and doc["protocol_version"] == 2
    assert tet.is_package(pkg) and not tet.is_package(tmp_path)
    with pytest.raises(tet.PackageError, match=r"^tet package: package has no CURRENT "
                                               r"generation$"):
        tet.open(pkg)
    with pytest.raises(tet.PackageError, match="package path already exists"):
        tet.create(pkg)


def test_ingest_records_claims_and_refuses_reuse(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    src = part(tmp_path / "my part.v2.tet", "x", np.arange(24, dtype=np.float32).reshape(4, 6),
               chunk_shape=(2, 3))
    assert tet.ingest(pkg, src, session_id="w1") == "my_part_v2"
    meta = json.loads((pkg / "staging/w1/PART_META.json").read_text())
    assert list(meta) == ["part_id", "writer_session_id", "protocol_version", "sealed",
                          "part_byte_len", "part_sha256", "claims"]
    assert meta["claims"] == [{"name": "x", "dtype": 1, "shape": [4, 6], "chunk_shape": [2, 3],
                               "full_grid": True}]
    assert (pkg / "staging/w1/part-my_part_v2.tet").read_bytes() == src.read_bytes()
    with pytest.raises(tet.PackageError, match=r"^package path already exists: .*staging/w1$"):
        tet.ingest(pkg, src, session_id="w1", part_id="other")
    with pytest.raises(tet.PackageError, match="already staged"):
        tet.ingest(pkg, src, session_id="w2")
    for bad in ("../x", "a/b", ""):
        with pytest.raises(tet.PackageError, match="invalid staging session id"):
            tet.ingest(pkg, src, session_id=bad, part_id="q")
    with pytest.raises(tet.PackageError, match="invalid part id"):
        tet.ingest(pkg, src, session_id="w3", part_id="../evil")
    (tmp_path / "junk.tet").write_bytes(b"hello world" * 10)
    with pytest.raises(tet.CatalogError, match="bad magic"):
        tet.ingest(pkg, tmp_path / "junk.tet", session_id="w4")
    with pytest.raises(tet.PackageError, match="missing PROTOCOL"):
        tet.ingest(tmp_path / "none.tet.d", src, session_id="w5")
    assert tet.ingest(tmp_path / "new.tet.d", src, session_id="w", create=True) == "my_part_v2"


def _two_parts(tmp_path: Path, pkg: Path) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    y = np.array([1, 2, 2, 3, 1, 1, 5, 5], dtype=np.int32)
    tet.ingest(pkg, part(tmp_path / "a.tet", "x", x, chunk_shape=(2, 3)), session_id="w1")
    tet.ingest(pkg, part(tmp_path / "b.tet", "y", y, chunk_shape=(3,)), session_id="w2",
               part_id="bb")
    return x, y


def test_publish_seals_a_generation_and_pins_it(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    x, y = _two_parts(tmp_path, pkg)
    assert tet.publish(pkg, ["a", "bb"], dry_run=True) == 1
    assert not (pkg / "CURRENT").exists() and os.listdir(pkg / "generations") == []
    assert tet.publish(pkg, ["a", "bb"]) == 1
    assert (pkg / "CURRENT").read_text() == "1\n"
    gen = pkg / "generations/00000001"
    assert sorted(os.listdir(gen)) == ["INDEX.json", "MANIFEST.json", "ZONE.json", "packed.tet"]
    manifest = json.loads((gen / "MANIFEST.json").read_text())
    assert manifest["part_ids"] == ["a", "bb"]
    assert manifest["packed_byte_len"] == (gen / "packed.tet").stat().st_size
    assert manifest["packed_sha256"] == packed_digest(gen / "packed.tet")
    with tet.open(pkg) as f:
        assert f.generation == 1 and f.datasets() == ["x", "y"]
        np.testing.assert_array_equal(f["x"][:], x)
        np.testing.assert_array_equal(f["y"][:], y)
        assert f.max("x") == 23.0
        # a later publish does not retarget the open handle
        assert tet.publish(pkg, ["bb"]) == 2
        assert f.datasets() == ["x", "y"] and f.generation == 1
        again = pickle.loads(pickle.dumps(f))
        assert again.generation == 1 and again.datasets() == ["x", "y"]
    with tet.open(pkg) as f:
        assert f.generation == 2 and f.datasets() == ["y"]  # a full snapshot of its parts
    with tet.open(f"{pkg}?generation=1") as f:
        assert f.generation == 1 and f.datasets() == ["x", "y"]
    with tet.open(tmp_path / "a.tet") as f:
        assert f.generation is None
    with pytest.raises(tet.PackageError, match=r"^package generation 9 is not sealed "
                                               r"\(missing packed.tet\)$"):
        tet.open(f"{pkg}?generation=9")
    with pytest.raises(tet.PackageError, match=r"^invalid generation id: x$"):
        tet.open(f"{pkg}?generation=x")


def test_publish_refusals(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    _two_parts(tmp_path, pkg)
    x2 = np.arange(4, dtype=np.float32).reshape(2, 2)
    tet.ingest(pkg, part(tmp_path / "r2.tet", "x", x2, chunk_shape=(2, 2)), session_id="s2")
    tet.ingest(pkg, part(tmp_path / "r5.tet", "x", x2 + 1, chunk_shape=(2, 2)), session_id="s5")
    with pytest.raises(tet.PackageError, match=r"^tet package: frozen part id not found in "
                                               "staging: 'zz'$"):
        tet.publish(pkg, ["zz"])
    with pytest.raises(tet.PackageError, match="publish requires a frozen part-id list"):
        tet.publish(pkg, [])
    with pytest.raises(tet.PackageError, match=r"^overlapping dataset claims in publish set: "
                       r"dataset=x parts=r2 \+ r5 \(full_grid vs full_grid\)$"):
        tet.publish(pkg, ["r2", "r5"])
    assert tet.publish(pkg, ["a"]) == 1
    with pytest.raises(tet.PackageError, match=r"^dataset schema conflict vs CURRENT: "
                       r"dataset=x prior=dtype:1 shape:\[4, 6\] new=dtype:1 shape:\[2, 2\] "
                       r"\(pass --replace x to allow in G\+1\)$"):
        tet.publish(pkg, ["r2"])
    with pytest.raises(tet.PackageError, match="schema conflict"):
        tet.publish(pkg, ["r2"], replace=["y"])
    assert tet.publish(pkg, ["r2"], replace=["x"], dry_run=True) == 2
    assert tet.publish(pkg, ["r2"], replace=["x"]) == 2
    with pytest.raises(tet.PackageError, match=r"^package path already exists: .*00000002$"):
        tet.publish(pkg, ["r2"], generation=2)
    assert tet.publish(pkg, ["r2", "bb"], generation=7) == 7
    assert (pkg / "CURRENT").read_text() == "7\n"
    assert os.listdir(pkg / "publishing") in ([], [".lock"])


def test_pack_copies_and_removes_only_after_a_checked_copy(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    _two_parts(tmp_path, pkg)
    tet.publish(pkg, ["a", "bb"])
    tet.publish(pkg, ["bb"])
    out = tmp_path / "out.tet"
    assert tet.pack(pkg, out, generation=1) == 1
    assert out.read_bytes() == (pkg / "generations/00000001/packed.tet").read_bytes()
    with pytest.raises(tet.PackageError, match="package path already exists"):
        tet.pack(pkg, out)
    with pytest.raises(tet.PackageError, match="generation 4 is not sealed"):
        tet.pack(pkg, tmp_path / "o4.tet", generation=4)
    assert tet.pack(pkg, tmp_path / "o2.tet", remove_package=True) == 2
    assert not pkg.exists()
    with tet.open(tmp_path / "o2.tet") as f:
        assert f.datasets() == ["y"] and f.generation is None


def test_region_parts_merge_into_one_dataset(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    full = np.arange(10 * 6, dtype=np.float64).reshape(10, 6)
    full[3, 2] = np.nan
    slabs = [(0, 4), (4, 8), (8, 10)]  # chunk rows of 2: every slab starts on a tile corner
    for i, (a, b) in enumerate(slabs):
        src = part(tmp_path / f"s{i}.tet", "big", full[a:b], chunk_shape=(2, 4),
                   codec="zstd" if i == 1 else "raw")
        tet.ingest(pkg, src, session_id=f"w{i}", part_id=f"s{i}",
                   regions={"big": {"shape": (10, 6), "offset": (a, 0)}})
    meta = json.loads((pkg / "staging/w1/PART_META.json").read_text())
    assert meta["claims"] == [{"name": "big", "dtype": 2, "shape": [10, 6],
                               "chunk_shape": [2, 4], "full_grid": False,
                               "region": {"tile_start": [2, 0], "tile_stop": [4, 2]}}]
    with pytest.raises(tet.PackageError, match=r"^missing tiles in publish set: dataset=big: "
                       r"2 of 10 tiles are claimed by no part \(first missing tile \[4, 0\]\)"):
        tet.publish(pkg, ["s0", "s1"])
    assert tet.publish(pkg, ["s2", "s0", "s1"]) == 1
    with tet.open(pkg) as f:
        np.testing.assert_array_equal(f["big"][:], full)
        assert np.isnan(f.max("big")) and f.nan_count("big") == 1
    tet.ingest(pkg, part(tmp_path / "o.tet", "big", full[2:6], chunk_shape=(2, 4)),
               session_id="wo", part_id="o", regions={"big": {"shape": (10, 6),
                                                              "offset": (2, 0)}})
    with pytest.raises(tet.PackageError, match=r"^overlapping region claims in publish set: "
                       r"dataset=big parts=s0 \+ o \(tiles \[0:2, 0:2\] vs tiles \[1:3, 0:2\]\)"):
        tet.publish(pkg, ["s0", "o", "s1", "s2"])
    with pytest.raises(tet.PackageError, match="start and end on a tile boundary"):
        tet.ingest(pkg, part(tmp_path / "m.tet", "big", full[1:3], chunk_shape=(2, 4)),
                   session_id="wm", regions={"big": {"shape": (10, 6), "offset": (1, 0)}})
    with pytest.raises(tet.PackageError, match="does not hold"):
        tet.ingest(pkg, tmp_path / "o.tet", session_id="wn", part_id="n",
                   regions={"nope": {"shape": (1,), "offset": (0,)}})


def test_log_and_prune_keep_current_and_pins(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    _two_parts(tmp_path, pkg)
    tet.ingest(pkg, part(tmp_path / "c.tet", "z", np.ones(3)), session_id="w3")
    tet.publish(pkg, ["a"])
    tet.publish(pkg, ["a", "bb"])
    tet.publish(pkg, ["bb"])
    rows = tet.log(pkg)
    assert [(r["generation"], r["current"], r["part_ids"], r["datasets"]) for r in rows] == [
        (1, False, ["a"], ["x"]), (2, False, ["a", "bb"], ["x", "y"]), (3, True, ["bb"], ["y"])]
    assert all(r["packed_byte_len"] > 0 and r["created_unix"] > 0 for r in rows)
    with tet.open(f"{pkg}?generation=1"):
        pass  # pins generation 1
    report = tet.prune(pkg, keep=1, dry_run=True)
    assert report["removed_generations"] == [2] and report["pinned"] == [1]
    assert sorted(os.listdir(pkg / "generations")) == ["00000001", "00000002", "00000003"]
    report = tet.prune(pkg, keep=1)
    assert report["removed_generations"] == [2] and report["kept_generations"] == [1, 3]
    assert report["removed_sessions"] == []  # a: still used by pinned 1; c: never published
    report = tet.prune(pkg, keep=1, grace_s=0)
    assert report["removed_generations"] == [1] and report["removed_sessions"] == ["w1"]
    assert sorted(os.listdir(pkg / "staging")) == ["w2", "w3"]
    with tet.open(pkg) as f:
        assert f.generation == 3
    with pytest.raises(tet.PackageError, match="keep must be at least 1"):
        tet.prune(pkg, keep=0)


def test_a_hostile_current_is_a_clear_error(tmp_path: Path) -> None:
    pkg = _pkg(tmp_path)
    _two_parts(tmp_path, pkg)
    tet.publish(pkg, ["a"])
    for text, shown in (("9" * 5000, "9" * 40 + "..."), ("../../etc", "../../etc"),
                        ("", ""), ("100000000", "100000000"), ("1 2", "1 2")):
        (pkg / "CURRENT").write_text(text)
        with pytest.raises(tet.PackageError) as e:
            tet.open(pkg)
        assert str(e.value) == f"invalid generation id: {shown}"
    (pkg / "CURRENT").write_text("000001\n")  # leading zeros, as tet-py reads them
    with tet.open(pkg) as f:
        assert f.generation == 1
