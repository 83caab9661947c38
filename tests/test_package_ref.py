"""Packages both ways against tet-py 0.8.3 (a subprocess): the same inputs give the same
``PART_META.json``/``MANIFEST.json``/``ZONE.json``/``INDEX.json`` (and ``packed.tet``)
bytes; packages it makes open here with the same datasets, generations and answers; ours
(region parts and copied tiles included) open there with the same values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import tet
from tests.packages import run_ref

INPUTS = """
import numpy as np, tet, json, sys
x = np.arange(24, dtype=np.float32).reshape(4, 6)
f = np.array([[np.nan, 1, 2], [np.nan, np.nan, np.nan], [3, -0.0, np.inf]])
tet.write_dataset("a.tet", "x", x, chunk_shape=(2, 3))
tet.write_dataset("b.tet", "y", np.array([1, 2, 2, 3, 1, 1, 5, 5], dtype=np.int32),
                  chunk_shape=(3,))
tet.write_dataset("c.tet", "f", f, chunk_shape=(1, 3))
tet.write_dataset("d.tet", "big", np.arange(1000, dtype=np.int64), chunk_shape=(100,))
tet.write_dataset("e.tet", "h", np.array([1.5, np.nan, -2], dtype=np.float16), chunk_shape=(2,))
"""

DOCS = ["staging/w1/PART_META.json", "generations/00000001/MANIFEST.json",
        "generations/00000001/ZONE.json", "generations/00000001/INDEX.json",
        "generations/00000001/packed.tet", "generations/00000002/ZONE.json",
        "generations/00000002/INDEX.json", "generations/00000002/MANIFEST.json"]


def _build(lib: str) -> str:
    """The same package script for either binding (`lib` names its package module)."""
    head = INPUTS.replace("import numpy as np, tet", f"import numpy as np\nimport {lib} as tet")
    return head + """
tet.create("p.tet.d")
for i, s in enumerate("abcde"):
    tet.ingest("p.tet.d", s + ".tet", session_id="w" + str(i + 1))
g1 = tet.publish("p.tet.d", ["a", "b", "c", "d", "e"])
g2 = tet.publish("p.tet.d", ["e", "a"])
print(json.dumps([g1, g2]))
"""


def test_documents_match_the_reference_byte_for_byte(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    assert run_ref(_build("tet"), tmp_path / "ref") == [1, 2]
    # the parts are the reference's files, so both packages start from the same bytes
    for s in "abcde":
        (tmp_path / "ours" / f"{s}.tet").write_bytes((tmp_path / "ref" / f"{s}.tet").read_bytes())
    pkg = tet.create(tmp_path / "ours" / "p.tet.d")
    for i, s in enumerate("abcde"):
        tet.ingest(pkg, tmp_path / "ours" / f"{s}.tet", session_id=f"w{i + 1}")
    assert tet.publish(pkg, ["a", "b", "c", "d", "e"]) == 1
    assert tet.publish(pkg, ["e", "a"]) == 2
    for doc in DOCS:
        ours = (pkg / doc).read_bytes()
        theirs = (tmp_path / "ref" / "p.tet.d" / doc).read_bytes()
        assert ours == theirs, doc
    assert (pkg / "CURRENT").read_bytes() == (tmp_path / "ref/p.tet.d/CURRENT").read_bytes()


def test_reference_packages_open_here(tmp_path: Path) -> None:
    run_ref(_build("tet"), tmp_path)
    answers = run_ref("""
        import tet, json
        out = []
        for u in ["p.tet.d", "p.tet.d?generation=1"]:
            f = tet.open(u)
            out.append([f.generation, f.datasets(),
                        f.query({"dataset": "x", "sum": []})])
        print(json.dumps(out))
    """, tmp_path)
    for (gen, names, resp), url in zip(answers, [tmp_path / "p.tet.d",
                                                 f"{tmp_path / 'p.tet.d'}?generation=1"]):
        with tet.open(url) as f:
            assert f.generation == gen and f.datasets() == names
            mine = f.query({"dataset": "x", "sum": []})["execution"]
            assert mine["operation_sum"] == resp["execution"]["operation_sum"] == 276.0
            np.testing.assert_array_equal(f["x"][:], np.arange(24, dtype=np.float32).reshape(4, 6))


def test_our_packages_open_in_the_reference(tmp_path: Path) -> None:
    """Region parts with zstd and raw tiles, dataset attrs carried: tet-py reads the
    values, the generation and the pin."""
    pkg = tet.create(tmp_path / "ours.tet.d")
    full = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    full[7, 1] = -0.0  # (tet-py 0.8.3 refuses partial reads of tiles holding a NaN)
    for i, (a, b) in enumerate([(0, 4), (4, 10), (10, 12)]):
        src = tmp_path / f"s{i}.tet"
        tet.write_dataset(src, "big", full[a:b], chunk_shape=(2, 5),
                          codec="zstd" if i % 2 else "raw", attrs={"units": "K"})
        tet.ingest(pkg, src, session_id=f"w{i}", part_id=f"s{i}",
                   regions={"big": {"shape": (12, 5), "offset": (a, 0)}})
    ints = np.arange(30, dtype=np.int64).reshape(5, 6) % 4
    tet.write_dataset(tmp_path / "i.tet", "ints", ints, chunk_shape=(2, 4), codec="zstd")
    tet.ingest(pkg, tmp_path / "i.tet", session_id="wi")
    assert tet.publish(pkg, ["s0", "s1", "s2", "i"]) == 1
    assert tet.publish(pkg, ["i"]) == 2
    got = run_ref(f"""
        import tet, json, numpy as np
        f = tet.open({str(pkg)!r} + "?generation=1")
        g = tet.open({str(pkg)!r})
        big = f.read_numpy("big", [{{}}, {{}}])
        print(json.dumps([f.generation, g.generation, f.datasets(), g.datasets(),
                          np.where(np.isnan(big), -1, big).tolist(),
                          f.read_numpy("ints", [{{}}, {{}}]).tolist()]))
    """, tmp_path)
    assert got[:4] == [1, 2, ["big", "ints"], ["ints"]]
    np.testing.assert_array_equal(np.array(got[4], dtype=np.float32),
                                  np.where(np.isnan(full), -1, full))
    np.testing.assert_array_equal(np.array(got[5]), ints)
    with tet.open(f"{pkg}?generation=1") as f:
        assert f["big"].attrs["units"] == "K"
    zone = json.loads((pkg / "generations/00000001/ZONE.json").read_text())
    assert [c["min_le"] for c in zone["chunks"] if c["dataset_id"] == 0][3] == "00000080"
