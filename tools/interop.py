#!/usr/bin/env python3
"""Interop check between `tet` and the reference binding (PyPI ``tet-py``).

``make interop`` (also run by CI after ``make test``):

* forward: our writer writes files covering all ten dtypes (and bool), rank 1..4
  (and 8) with ragged edge chunks, raw and zstd (frames with the content
  checksum), each with its tile checksum table (``tet_checksums_ref``, one with a
  metadata spill after it), attrs / dim_names / coords,
  several datasets per file, create + open_append sessions, streamed datasets,
  names with slashes, a file past the 64 MiB encode window and one whose broken
  footer `tet repair` replaced (the table kept under a minimal footer); the reference,
  in its own interpreter (``.venv-ref``, driven by ``tools/interop_ref.py``),
  opens each file and dumps its catalog, metadata, history and ``read_numpy`` of
  the whole array and of strided / labelled selections, which must equal what
  we wrote bit for bit;
* reverse: the reference's writer writes files from our arrays (every dtype it
  accepts) and our reader must return the same arrays, catalog and metadata.

Where the reference raises for a reason we can name (a dtype it refuses, NaN
data on its copying read path), the error is printed as a "reference
limitation" (neither pass nor fail); any other reference error is a failure.
One line per check; the last line is ``interop: N passed, M failed``; the exit
status is non-zero when anything failed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tet
import tet.verify
from tet.text import encode_text
from tet.writer import default_chunk_shape

ROOT = Path(__file__).resolve().parent.parent
REF_VENV = ROOT / ".venv-ref"
REF_PY = REF_VENV / "bin" / "python"
REF_PACKAGE = "tet-py"
REF_VERSION = "0.8.3"
CHILD = Path(__file__).resolve().with_name("interop_ref.py")

# Layout v1 wire tags (the format's table, kept here independently of our package).
WIRE_TAGS = {
    "float32": 1, "float64": 2, "int32": 3, "int64": 4, "uint8": 5,
    "uint16": 6, "int16": 7, "uint32": 8, "float16": 9, "uint64": 10,
}
DTYPES = tuple(WIRE_TAGS)
NAN_PAYLOAD = {"float16": 0x7E01, "float32": 0x7FC0_0123, "float64": 0x7FF8_0000_0000_0123}

Selection = list[dict[str, Any]] | None


# ---------------------------------------------------------------------------
# The reference environment.


def _ref_version() -> str | None:
    if not REF_PY.exists():
        return None
    probe = "import importlib.metadata as m, numpy, tet; print(m.version('tet-py'))"
    r = subprocess.run([str(REF_PY), "-I", "-c", probe], capture_output=True, text=True,
                       check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_reference() -> Path:
    """`.venv-ref` with tet-py==REF_VERSION, created / installed from PyPI when needed."""
    found = _ref_version()
    if found != REF_VERSION:
        print(f"reference: installing {REF_PACKAGE}=={REF_VERSION} into {REF_VENV} "
              f"(found: {found or 'none'})", flush=True)
        if not REF_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
        pip = [str(REF_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               f"{REF_PACKAGE}=={REF_VERSION}", "numpy"]
        if subprocess.run(pip, check=False).returncode != 0 or _ref_version() != REF_VERSION:
            print(f"interop: could not install {REF_PACKAGE}=={REF_VERSION} into {REF_VENV} "
                  f"(remove it and retry)")
            raise SystemExit(2)
    print(f"reference: {REF_PACKAGE} {REF_VERSION} ({REF_PY})", flush=True)
    return REF_PY


# ---------------------------------------------------------------------------
# Test data.


def sample(rng: np.random.Generator, dtype: str, shape: Sequence[int], *,
           nan: bool = False) -> np.ndarray[Any, Any]:
    """Random values of `dtype` with the awkward ones mixed in (extremes, -0.0,
    subnormals, infinities; NaNs with payloads when `nan`), so that equality is
    bitwise and meaningful."""
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if dt.kind == "b":
        flat = rng.random(n) < 0.5
    elif dt.kind == "f":
        flat = (rng.standard_normal(n) * 1000).astype(dt)
        fi = np.finfo(dt)
        bits = np.dtype(f"u{dt.itemsize}")
        payload = np.array([NAN_PAYLOAD[dt.name]], dtype=bits).view(dt)[0]
        neg_nan = np.array([NAN_PAYLOAD[dt.name] | (1 << (8 * dt.itemsize - 1))],
                           dtype=bits).view(dt)[0]
        special = np.array([np.inf, -np.inf, -0.0, fi.max, fi.min, fi.tiny,
                            fi.smallest_subnormal, fi.eps], dtype=dt)
        if nan:
            special = np.concatenate([special, np.array([np.nan, payload, neg_nan], dtype=dt)])
        k = min(n, len(special))
        flat[rng.choice(n, k, replace=False)] = special[:k]
    else:
        ii = np.iinfo(dt)
        flat = rng.integers(ii.min, ii.max, size=n, dtype=dt, endpoint=True)
        k = min(n, 2)
        flat[rng.choice(n, k, replace=False)] = np.array([ii.min, ii.max], dtype=dt)[:k]
    return flat.reshape(tuple(shape))


def strided(shape: Sequence[int]) -> list[Selection]:
    """The whole array and two strided selections (open and closed ends)."""
    a = [{"start": 1 if n > 1 else 0, "step": 2} for n in shape]
    b = [{"start": n // 3, "stop": max(n // 3 + 1, n - n // 4), "step": 3 if d % 2 == 0 else 1}
         for d, n in enumerate(shape)]
    return [None, a, b]


def numpy_key(sel: Selection, labels: dict[int, list[str]] | None = None) -> tuple[Any, ...]:
    """The NumPy index of a wire selection (labels resolve to their position, stop exclusive)."""
    if sel is None:
        return (...,)
    out = []
    for d, axis in enumerate(sel):
        start, stop = axis.get("start"), axis.get("stop")
        if "start_label" in axis:
            start = (labels or {})[d].index(axis["start_label"])
        if "stop_label" in axis:
            stop = (labels or {})[d].index(axis["stop_label"])
        out.append(slice(start, stop, axis.get("step")))
    return tuple(out)


def wire_array(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What a reader must return for `arr` (little-endian; bool as 0/1 uint8)."""
    if arr.dtype.kind == "b":
        return np.ascontiguousarray(arr, dtype=np.uint8)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def expected_meta(attrs: dict[str, Any] | None, dim_names: Sequence[str] | None,
                  coords: dict[str, Sequence[str]] | None) -> dict[str, Any]:
    """The footer ``metadata.datasets[name]`` entry our writer documents."""
    meta: dict[str, Any] = {}
    if attrs:
        meta["attrs"] = {k: v if isinstance(v, str) else str(v) for k, v in attrs.items()}
    if dim_names:
        meta["dim_names"] = list(dim_names)
    if coords:
        meta["coords"] = {k: {"labels": list(v)} for k, v in coords.items()}
    return meta


@dataclass
class DsCase:
    name: str
    want: np.ndarray[Any, Any]
    tag: int
    chunk_shape: tuple[int, ...] | None  # None: whatever the writer chose (reverse only)
    meta: dict[str, Any]
    selections: list[Selection]
    labels: dict[int, list[str]] = field(default_factory=dict)

    def expect(self, sel: Selection) -> np.ndarray[Any, Any]:
        return self.want[numpy_key(sel, self.labels)]


@dataclass
class FileCase:
    label: str
    path: Path
    datasets: list[DsCase]
    history: list[tuple[str, str]]  # (op, source) rows that must be there, in order
    sessions: list[dict[str, Any]] = field(default_factory=list)  # reverse only


def ds_case(name: str, arr: np.ndarray[Any, Any], chunk_shape: Sequence[int] | None = None,
            attrs: dict[str, Any] | None = None, dim_names: Sequence[str] | None = None,
            coords: dict[str, Sequence[str]] | None = None, extra: Sequence[Selection] = (),
            *, default_chunk: bool = True) -> DsCase:
    want = wire_array(arr)
    if chunk_shape is not None:
        chunk: tuple[int, ...] | None = tuple(chunk_shape)
    else:
        chunk = default_chunk_shape(want.shape, want.itemsize) if default_chunk else None
    labels: dict[int, list[str]] = {}
    for key, values in (coords or {}).items():
        axis = list(dim_names).index(key) if dim_names and key in dim_names else int(key)
        labels[axis] = [str(v) for v in values]
    sels = strided(want.shape) if want.size < 4_000_000 else [None, strided(want.shape)[2]]
    return DsCase(name, want, WIRE_TAGS[want.dtype.name], chunk,
                  expected_meta(attrs, dim_names, coords), [*sels, *extra], labels)


# ---------------------------------------------------------------------------
# Forward: files written by our package.


def _queue(w: tet.TetWriter, c: DsCase, arr: np.ndarray[Any, Any], codec: str = "raw",
           level: int = 0, **kw: Any) -> DsCase:
    w.write_dataset(c.name, arr, chunk_shape=c.chunk_shape, codec=codec, level=level, **kw)
    return c


def forward_files(tmp: Path, rng: np.random.Generator) -> list[FileCase]:
    cases: list[FileCase] = []

    # Every dtype (and bool), once raw and once zstd, with ragged edge chunks.
    for codec, level, shape, chunk in (("raw", 0, (37, 23), (8, 5)),
                                       ("zstd", 3, (41, 19), (10, 6))):
        path = tmp / f"dtypes-{codec}.tet"
        w = tet.TetWriter.create(path)
        datasets = []
        for dt in (*DTYPES, "bool"):
            arr = sample(rng, dt, shape)
            datasets.append(_queue(w, ds_case(f"dtype/{dt}", arr, chunk), arr, codec, level))
        for dt in ("float16", "float32", "float64"):  # NaNs (with payloads, signed)
            arr = sample(rng, dt, shape, nan=True)
            datasets.append(_queue(w, ds_case(f"nan/{dt}", arr, chunk), arr, codec, level))
        arr = sample(rng, "float32", shape, nan=True)  # one chunk: the reference maps it
        datasets.append(_queue(w, ds_case("nan/float32-one-chunk", arr, shape), arr, codec, level))
        for dt in (">f8", ">i4", ">u2"):  # big-endian sources are stored little-endian
            arr = sample(rng, np.dtype(dt).newbyteorder("=").name, shape).astype(dt)
            name = f"dtype/{np.dtype(dt).name}-big-endian"
            datasets.append(_queue(w, ds_case(name, arr, chunk), arr, codec, level))
        w.commit()
        cases.append(FileCase(f"dtypes-{codec}", path, datasets, [("write", str(path))]))

    # Rank 1..4, one-shot write_dataset, raw and zstd.
    ranks = (("float64", (1001,), (64,)), ("int32", (65, 33), (16, 10)),
             ("uint16", (9, 10, 11), (4, 3, 5)), ("float32", (5, 6, 7, 8), (2, 4, 3, 5)))
    for codec in ("raw", "zstd"):
        for rank, (dt, shape, chunk) in enumerate(ranks, 1):
            path = tmp / f"rank{rank}-{codec}.tet"
            arr = sample(rng, dt, shape)
            c = ds_case(f"rank{rank}", arr, chunk)
            tet.write_dataset(path, c.name, arr, chunk_shape=chunk, codec=codec)
            cases.append(FileCase(path.stem, path, [c], [("write", str(path))]))

    # Footer metadata: attrs (text and numbers), dim names, coords, label selections.
    path = tmp / "meta.tet"
    arr = sample(rng, "float32", (12, 7, 9))
    attrs = {"units": "kelvin", "long_name": "température ☃", "scale": 2, "offset": 0.25}
    dims = ["time", "lat", "lon"]
    coords = {"time": [f"t{i:02d}" for i in range(12)], "lat": [f"{-30 + 10 * i}N" for i in
                                                                  range(7)]}
    by_label: Selection = [{"start_label": "t03", "stop_label": "t10", "step": 2},
                           {"start_label": "-20N"}, {"start": 2, "stop": 9, "step": 3}]
    c = ds_case("air/temperature", arr, (5, 4, 4), attrs, dims, coords, [by_label])
    tet.write_dataset(path, c.name, arr, chunk_shape=c.chunk_shape, attrs=attrs, dim_names=dims,
                      coords=coords, history_op="ingest", history_source="interop:meta",
                      codec="zstd")
    cases.append(FileCase("meta", path, [c], [("ingest", "interop:meta")]))

    # Metadata past the 64 KiB inline footer: spilled after the checksum table.
    path = tmp / "spill.tet"
    arr = sample(rng, "int16", (30, 20))
    attrs = {f"k{i:02d}": chr(ord("a") + i % 26) * 1024 for i in range(64)}
    c = ds_case("spilled", arr, (7, 6), attrs)
    tet.write_dataset(path, c.name, arr, chunk_shape=c.chunk_shape, attrs=attrs, codec="zstd")
    cases.append(FileCase("spill", path, [c], [("write", str(path))]))

    # Raw tiles after zstd frames and after smaller elements, from whole arrays, a stream
    # and an append: the writer starts each raw tile at a multiple of its element size.
    path = tmp / "aligned.tet"
    w = tet.TetWriter.create(path)
    ds_al = []
    a = sample(rng, "float32", (31,))
    ds_al.append(_queue(w, ds_case("zstd-first", a, (10,)), a, "zstd"))
    a = sample(rng, "uint8", (3,))
    ds_al.append(_queue(w, ds_case("odd-bytes", a, (3,)), a))
    a = sample(rng, "float64", (7, 5))
    ds_al.append(_queue(w, ds_case("f64-after-u8", a, (3, 5)), a))
    a = sample(rng, "int16", (9,))
    ds_al.append(_queue(w, ds_case("i16-zstd", a, (4,)), a, "zstd"))
    a = sample(rng, "uint64", (12,))
    c = ds_case("u64-stream", a, (5,))
    stream = w.create_dataset(c.name, a.shape, a.dtype, chunk_shape=c.chunk_shape)
    stream[0:12] = a
    ds_al.append(c)
    w.commit()
    w = tet.TetWriter.open_append(path)
    a = sample(rng, "float32", (6, 4))
    ds_al.append(_queue(w, ds_case("appended-f32", a, (4, 4)), a))
    w.commit()
    cases.append(FileCase("aligned", path, ds_al, [("write", str(path))] * 2))

    # Typed metadata (metadata.tet): file attrs, typed and long attrs, CF encoding, a 0-d
    # variable and a text dataset; the reference reads the arrays and the v1 text.
    path = tmp / "typed.tet"
    w = tet.TetWriter.create(path)
    w.set_file_attrs({"Conventions": "CF-1.7", "realization": np.int32(1),
                      "history": "h" * 3000, "range": np.array([0.5, np.nan])})
    a = sample(rng, "float32", (6, 5))
    typed = {"units": "K", "_FillValue": np.float32(1e20), "valid_range": np.array(
        [0.0, 1.0], dtype=np.float32)}
    text = {"units": "K", "_FillValue": "100000000000000000000", "valid_range": "[0, 1]"}
    ds_ty = [_queue(w, ds_case("tas", a, (4, 5), text, ["lat", "lon"]), a, attrs=typed,
                    dim_names=["lat", "lon"], extra={"attrs": {"comment": "c" * 2000},
                                                     "encoding": {"dtype": "int16"}})]
    a = np.array([7], dtype=np.int32)
    ds_ty.append(_queue(w, ds_case("crs", a, (1,)), a, extra={"shape": []}))
    a, entry = encode_text(np.array([f"station {i}" for i in range(100)]))
    ds_ty.append(_queue(w, ds_case("station_name", a, (100, a.shape[1])), a,
                        extra={"text": entry}))
    w.commit()
    cases.append(FileCase("typed", path, ds_ty, [("write", str(path))]))

    # Many datasets in one file: nested names, odd geometry, odd sources, history rows.
    path = tmp / "multi.tet"
    w = tet.TetWriter.create(path)
    w.push_history_event("import", "interop:multi")
    w.push_history_event("derive", "interop:multi", parents=["grid/a"], params={"k": "v"})
    ds = []
    a = sample(rng, "float32", (40, 30))
    ds.append(_queue(w, ds_case("grid/a", a, (16, 16)), a, "zstd", 1))
    a = sample(rng, "int64", (17,))
    ds.append(_queue(w, ds_case("grid/b/c", a, (5,)), a))
    a = sample(rng, "uint8", (3, 4, 5))
    ds.append(_queue(w, ds_case("chunk-larger-than-shape", a, (8, 8, 8)), a))
    a = sample(rng, "float64", (1,))
    ds.append(_queue(w, ds_case("single", a, (1,)), a, "zstd"))
    a = sample(rng, "float32", (300, 200))
    ds.append(_queue(w, ds_case("default-chunk", a), a))
    a = sample(rng, "int16", (40, 33))[::2, 1::3]
    ds.append(_queue(w, ds_case("non-contiguous-source", a, (6, 4)), a))
    a = np.asfortranarray(sample(rng, "uint32", (23, 19)))
    ds.append(_queue(w, ds_case("fortran-source", a, (7, 7)), a, "zstd"))
    a = sample(rng, "int32", (2, 3, 2, 3, 2, 1, 2, 3))
    ds.append(_queue(w, ds_case("rank8", a, (1, 2, 1, 2, 1, 1, 2, 2)), a, "zstd"))
    a = sample(rng, "float64", (50, 50))
    ds.append(_queue(w, ds_case("zstd-level-19", a, (20, 20)), a, "zstd", 19))
    a = sample(rng, "uint16", (6, 5))
    labels = [f"row{i}" for i in range(6)]
    sel: Selection = [{"start_label": "row1", "stop_label": "row5"}, {"step": 2}]
    c = ds_case("labels/by-axis-index", a, (4, 4), coords={"0": labels}, extra=[sel])
    ds.append(_queue(w, c, a, coords={"0": labels}))
    w.commit()
    cases.append(FileCase("multi", path, ds, [("import", "interop:multi"),
                                              ("derive", "interop:multi")]))

    # create + open_append twice: earlier payloads copied, history and metadata kept.
    path = tmp / "append.tet"
    ds = []
    w = tet.TetWriter.create(path)
    w.push_history_event("create", "interop:append")
    a = sample(rng, "float32", (20, 20))
    ds.append(_queue(w, ds_case("base/x", a, (8, 8), {"role": "base"}), a, attrs={"role": "base"}))
    a = sample(rng, "uint16", (33,))
    ds.append(_queue(w, ds_case("base/y", a, (10,)), a, "zstd"))
    w.commit()
    w = tet.TetWriter.open_append(path)
    w.push_history_event("append", "interop:append#1")
    a = sample(rng, "int32", (11, 13))
    kw: dict[str, Any] = {"dim_names": ["y", "x"], "coords": {"x": [str(i) for i in range(13)]}}
    ds.append(_queue(w, ds_case("grid/appended", a, (4, 5), **kw), a, "zstd", **kw))
    a = sample(rng, "float16", (9, 9, 9))
    ds.append(_queue(w, ds_case("more", a, (4, 4, 4)), a))
    w.commit()
    w = tet.TetWriter.open_append(path)
    w.push_history_event("append", "interop:append#2")
    a = sample(rng, "uint64", (7,))
    ds.append(_queue(w, ds_case("last", a, (3,)), a))
    w.commit()
    cases.append(FileCase("append", path, ds, [("create", "interop:append"),
                                               ("append", "interop:append#1"),
                                               ("append", "interop:append#2")]))

    # Streamed datasets: blocks of any size, partly covered tiles, unwritten zeros.
    path = tmp / "stream.tet"
    w = tet.TetWriter.create(path)
    full = sample(rng, "float64", (50, 37))
    s = w.create_dataset("streamed/zstd", full.shape, "float64", chunk_shape=(8, 8),
                         codec="zstd")
    s[0:20, :] = full[0:20]
    s[25:50, 0:30] = full[25:50, 0:30]
    want = np.zeros_like(full)
    want[0:20], want[25:50, 0:30] = full[0:20], full[25:50, 0:30]
    stream_a = ds_case("streamed/zstd", want, (8, 8))
    v = sample(rng, "uint16", (100,))
    t = w.create_dataset("streamed/raw", v.shape, "uint16", chunk_shape=(7,))
    for i in range(0, 100, 13):
        t[i:i + 13] = v[i:i + 13]
    w.commit()
    cases.append(FileCase("stream", path, [stream_a, ds_case("streamed/raw", v, (7,))],
                          [("write", str(path))]))

    # Past the 64 MiB encode window, raw and zstd.
    path = tmp / "large.tet"
    big = np.add.outer(np.arange(3000, dtype=np.float32) * 0.5, np.arange(6400, dtype=np.float32))
    w = tet.TetWriter.create(path)
    large = [_queue(w, ds_case("big/raw", big, (512, 1000)), big),
             _queue(w, ds_case("big/zstd", big, (640, 1024)), big, "zstd", 1)]
    w.commit()
    cases.append(FileCase("large", path, large, [("write", str(path))]))

    # A broken footer repaired: the checksum table kept under a minimal footer.
    path = tmp / "repaired.tet"
    w = tet.TetWriter.create(path)
    a, b = sample(rng, "float64", (30, 12)), sample(rng, "int32", (40,))
    ds = [_queue(w, ds_case("repaired/raw", a, (7, 5)), a),
          _queue(w, ds_case("repaired/zstd", b, (9,)), b, "zstd")]
    w.commit()
    data = bytearray(path.read_bytes())
    data[-20] = ord("#")  # inside the footer JSON, which no longer parses
    path.write_bytes(bytes(data))
    (action,) = tet.verify.repair(path, ["footer_invalid"]).actions
    assert action.applied and "checksum table" in action.message, action
    cases.append(FileCase("repaired", path, ds, []))
    return cases


# ---------------------------------------------------------------------------
# Reverse: files written by the reference writer from our arrays.


def reverse_files(tmp: Path, rng: np.random.Generator,
                  arrays: dict[str, np.ndarray[Any, Any]]) -> list[FileCase]:
    cases: list[FileCase] = []

    def spec(c: DsCase, arr: np.ndarray[Any, Any], **kw: Any) -> dict[str, Any]:
        key = f"a{len(arrays)}"
        arrays[key] = arr
        out = {"name": c.name, "array": key, **kw}
        if c.chunk_shape is not None:
            out["chunk_shape"] = list(c.chunk_shape)
        return out

    def file(label: str, sessions: list[tuple[str, list[tuple[DsCase, dict[str, Any]]],
                                             list[tuple[str, str]]]]) -> None:
        path = tmp / f"{label}.tet"
        rows = [r for _, _, hist in sessions for r in hist]
        wire = [{"mode": mode, "history": [list(h) for h in hist], "datasets": [s for _, s in dss]}
                for mode, dss, hist in sessions]
        cases.append(FileCase(label, path, [c for _, dss, _ in sessions for c, _ in dss], rows,
                              wire))

    # Every dtype in one create session.
    dss = []
    for dt in DTYPES:
        a = sample(rng, dt, (29, 17), nan=True)
        c = ds_case(f"dt/{dt}", a, (6, 4))
        dss.append((c, spec(c, a)))
    file("ref-dtypes", [("create", dss, [("ref-create", "interop:dtypes")])])

    # Rank 1..4 through the one-shot write_dataset.
    ranks = (("float64", (999,), (100,)), ("int64", (31, 45), (8, 16)),
             ("uint8", (7, 9, 11), (3, 4, 5)), ("float32", (4, 5, 6, 7), (3, 2, 4, 5)))
    for rank, (dt, shape, chunk) in enumerate(ranks, 1):
        a = sample(rng, dt, shape)
        c = ds_case(f"rank{rank}", a, chunk)
        file(f"ref-rank{rank}", [("write_dataset", [(c, spec(c, a))],
                                  [("ref-write", f"interop:rank{rank}")])])

    # Metadata, and the writer's own default chunk shape.
    a = sample(rng, "float32", (10, 6, 8))
    attrs = {"units": "m/s", "long_name": "vitesse du vent ☃"}
    dims = ["time", "lat", "lon"]
    coords = {"time": [f"d{i}" for i in range(10)], "lon": [f"{i * 45}E" for i in range(8)]}
    sel: Selection = [{"start_label": "d2", "stop_label": "d9", "step": 3}, {},
                      {"start_label": "45E", "stop_label": "315E"}]
    c = ds_case("wind/u", a, None, attrs, dims, coords, [sel], default_chunk=False)
    file("ref-meta", [("write_dataset", [(c, spec(c, a, attrs=attrs, dim_names=dims,
                                                  coords=coords))], [])])

    # create + open_append, nested names.
    first, second = [], []
    for name, dt, shape, chunk in (("grid/a", "float32", (30, 20), (7, 6)),
                                   ("grid/b", "int16", (25,), (4,))):
        a = sample(rng, dt, shape)
        c = ds_case(name, a, chunk)
        first.append((c, spec(c, a)))
    a = sample(rng, "uint32", (13, 17))
    c = ds_case("grid/c", a, (5, 5), {"role": "appended"})
    second.append((c, spec(c, a, attrs={"role": "appended"})))
    a = sample(rng, "float64", (6, 7, 8))
    c = ds_case("top", a, (4, 4, 4))
    second.append((c, spec(c, a)))
    file("ref-append", [("create", first, [("ref-create", "interop:append")]),
                        ("append", second, [("ref-append", "interop:append")])])

    # bool: our writer stores it as uint8; does the reference's?
    a = sample(rng, "bool", (9, 4))
    c = ds_case("flags", a, (4, 4))
    file("ref-bool", [("write_dataset", [(c, spec(c, a))], [])])
    return cases


# ---------------------------------------------------------------------------
# Comparison.


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.limits: list[str] = []

    def check(self, label: str, problem: str | None) -> bool:
        if problem is None:
            self.passed += 1
            print(f"PASS  {label}")
            return True
        self.failed += 1
        print(f"FAIL  {label}: {problem}")
        return False

    def limitation(self, label: str, error: str) -> None:
        self.limits.append(label)
        print(f"LIMIT {label}: reference limitation: {error}")


def array_problem(got: Any, want: np.ndarray[Any, Any]) -> str | None:
    got = np.asarray(got)
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    if got.tobytes() == want.tobytes():
        return None
    bits = f"u{want.itemsize}"
    g = np.ascontiguousarray(got).reshape(-1).view(bits)
    w = np.ascontiguousarray(want).reshape(-1).view(bits)
    bad = np.flatnonzero(g != w)
    at = tuple(int(i) for i in np.unravel_index(int(bad[0]), want.shape))
    gv, wv = got.reshape(-1)[bad[0]], want.reshape(-1)[bad[0]]
    return (f"{len(bad)} of {want.size} elements differ; first at {at}: got {gv!r} "
            f"(0x{int(g[bad[0]]):x}), expected {wv!r} (0x{int(w[bad[0]]):x})")


def json_problem(got: Any, want: Any, path: str = "") -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return (f"{path or '.'}: keys {sorted(got)} != expected {sorted(want)}")
        for k in want:
            p = json_problem(got[k], want[k], f"{path}.{k}")
            if p:
                return p
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{path or '.'}: {len(got)} items != expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            p = json_problem(g, w, f"{path}[{i}]")
            if p:
                return p
        return None
    if type(got) is not type(want) or got != want:
        return f"{path or '.'}: {got!r} != expected {want!r}"
    return None


def history_problem(rows: list[dict[str, Any]], want: list[tuple[str, str]]) -> str | None:
    """`want` must appear in `rows`, in order (other rows may sit between)."""
    pairs = [(r.get("op"), r.get("source")) for r in rows]
    it = iter(pairs)
    missing = [w for w in want if not any(p == w for p in it)]
    return None if not missing else f"rows {missing} not found in order in {pairs}"


def sel_text(sel: Selection) -> str:
    if sel is None:
        return "full"
    return "[" + ", ".join(
        ",".join(f"{k}={v}" for k, v in axis.items()) or ":" for axis in sel) + "]"


def read_error(t: Tally, label: str, error: str, want: np.ndarray[Any, Any]) -> None:
    """A reference read that raised: a limitation when it is one we can name, else a failure."""
    if "unset elements" in error and want.dtype.kind == "f" and np.isnan(want).any():
        t.limitation(label, f"{error} [the selection holds NaN, which the reference's copying "
                            "read path takes for an unset element]")
    elif "unsupported" in error.lower():
        t.limitation(label, error)
    else:
        t.check(label, f"the reference raised {error}")


def compare_forward(t: Tally, case: FileCase, rec: dict[str, Any], out: Path) -> None:
    tag = f"fwd {case.label}"
    if "open_error" in rec:
        if "unsupported" in rec["open_error"].lower():
            t.limitation(f"{tag} open", rec["open_error"])
        else:
            t.check(f"{tag} open", f"the reference raised {rec['open_error']}")
        return
    ours = tet.open(case.path)
    try:
        refs = ours.catalog.footer_refs
        t.check(f"{tag} has our checksum table", None if "tet_checksums_ref" in refs
                else f"no tet_checksums_ref in the footer (regions: {sorted(refs)})")
        t.check(f"{tag} names", json_problem(rec["names"], [d.name for d in case.datasets]))
        summary = rec["summary"]
        want = json.loads(json.dumps(ours.summary()))
        # our typed metadata (metadata.tet) is an extension the reference skips on read
        if want.get("metadata", {}).pop("tet", None) is not None:
            t.check(f"{tag} typed metadata skipped by the reference",
                    "the reference kept it" if "tet" in summary.get("metadata", {}) else None)
        t.check(f"{tag} summary == ours", json_problem(summary, want))
        t.check(f"{tag} history", history_problem(summary.get("history") or [], case.history))
        entries = summary.get("metadata", {}).get("datasets", {})
        by_name = {d["name"]: d for d in summary.get("datasets", [])}
        for c, got in zip(case.datasets, rec["datasets"]):
            dtag = f"{tag} {c.name}"
            want_rec = {"name": c.name, "dtype": c.tag, "shape": list(c.want.shape),
                        "chunk_shape": list(c.chunk_shape or ())}
            t.check(f"{dtag} catalog", json_problem(by_name.get(c.name), want_rec))
            if "dataset_error" in got:
                t.check(f"{dtag} dataset()", f"the reference raised {got['dataset_error']}")
            else:
                want_ds = {**want_rec, "dim_names": c.meta.get("dim_names")}
                t.check(f"{dtag} dataset()", json_problem(got["dataset"], want_ds))
            t.check(f"{dtag} metadata", json_problem(entries.get(c.name, {}), c.meta))
            want_max = float(np.max(c.want.astype(np.float64)))
            if "max_error" in got:
                read_error(t, f"{dtag} max", got["max_error"], c.want)
            else:
                t.check(f"{dtag} max", None if (got["max"] is None and not np.isfinite(want_max))
                        or got["max"] == want_max  # the wire writes NaN and ±inf as null
                        else f"the reference says {got['max']}, NumPy {want_max}")
            for sel, read in zip(c.selections, got["reads"]):
                rtag = f"{dtag} read_numpy {sel_text(sel)}"
                if "error" in read:
                    read_error(t, rtag, read["error"], c.expect(sel))
                    continue
                t.check(rtag, array_problem(np.load(out / read["npy"]), c.expect(sel)))
    finally:
        ours.close()


def compare_reverse(t: Tally, case: FileCase, rec: dict[str, Any]) -> None:
    tag = f"rev {case.label}"
    written = []
    for session in rec["sessions"]:
        for d in session["datasets"]:
            if "error" in d:
                t.limitation(f"{tag} write {d['name']}", d["error"])
            else:
                written.append(d["name"])
        if "error" in session:
            t.limitation(f"{tag} commit", session["error"])
    if "open_error" in rec:
        if written:  # the reference wrote something it cannot open itself
            t.check(f"{tag} reference opens its own file", rec["open_error"])
        return
    datasets = [c for c in case.datasets if c.name in written]
    with tet.open(case.path) as f:
        t.check(f"{tag} names", json_problem(f.datasets(), [c.name for c in datasets]))
        ours = json.loads(json.dumps(f.summary()))
        t.check(f"{tag} summary == reference's", json_problem(ours, rec["summary"]))
        t.check(f"{tag} history", history_problem(f.history, case.history))
        ref_chunks = {d["name"]: tuple(d["chunk_shape"]) for d in rec["summary"]["datasets"]}
        for c in datasets:
            dtag = f"{tag} {c.name}"
            ds = f[c.name]
            chunk = c.chunk_shape or ref_chunks.get(c.name)
            t.check(f"{dtag} catalog", json_problem(
                [ds.name, ds.dtype, list(ds.shape), list(ds.chunk_shape)],
                [c.name, c.tag, list(c.want.shape), list(chunk or ())]))
            meta = {"attrs": dict(ds.attrs), "dim_names": list(ds.dim_names or []),
                    "coords": {k: list(v) for k, v in ds.coords.items()}}
            want_meta = {"attrs": c.meta.get("attrs", {}),
                         "dim_names": c.meta.get("dim_names", []),
                         "coords": {k: v["labels"] for k, v in c.meta.get("coords", {}).items()}}
            t.check(f"{dtag} attrs/dim_names/coords", json_problem(meta, want_meta))
            for sel in c.selections:
                rtag = f"{dtag} read_numpy {sel_text(sel)}"
                try:
                    got = f.read_numpy(c.name, sel)
                except Exception as exc:
                    t.check(rtag, f"raised {type(exc).__name__}: {exc}")
                    continue
                t.check(rtag, array_problem(got, c.expect(sel)))
            keys: list[Any] = [numpy_key(s) for s in c.selections[1:] if s and not any(
                "start_label" in a or "stop_label" in a for a in s)]
            keys += [-1, (..., 0)]
            for key in keys:
                rtag = f"{dtag} f[name][{key_text(key)}]"
                try:
                    got = ds[key]
                except Exception as exc:
                    t.check(rtag, f"raised {type(exc).__name__}: {exc}")
                    continue
                t.check(rtag, array_problem(got, np.asarray(c.want[key])))


def key_text(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)

    def one(k: Any) -> str:
        if k is Ellipsis:
            return "..."
        if isinstance(k, slice):
            return ":".join("" if v is None else str(v) for v in (k.start, k.stop, k.step))
        return str(k)

    return ", ".join(one(k) for k in parts)


# ---------------------------------------------------------------------------


def main() -> int:
    t0 = time.perf_counter()
    ref_py = ensure_reference()
    t = Tally()
    rng = np.random.default_rng(20240601)
    with tempfile.TemporaryDirectory(prefix="tet-interop-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fwd").mkdir()
        (tmp / "rev").mkdir()
        forward = forward_files(tmp / "fwd", rng)
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        reverse = reverse_files(tmp / "rev", rng, arrays)
        np.savez(tmp / "inputs.npz", **arrays)
        manifest = {
            "arrays": str(tmp / "inputs.npz"),
            "forward": [{"file": str(c.path),
                         "datasets": [{"name": d.name, "selections": d.selections}
                                      for d in c.datasets]} for c in forward],
            "reverse": [{"file": str(c.path), "sessions": c.sessions} for c in reverse],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        print(f"interop: wrote {len(forward)} files with tet {tet.__version__} "
              f"({sum(len(c.datasets) for c in forward)} datasets)", flush=True)
        out = tmp / "out"
        child = subprocess.run(
            [str(ref_py), "-I", str(CHILD), str(tmp / "manifest.json"), str(out)],
            cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
        if child.returncode != 0:
            print(child.stdout + child.stderr)
            t.check("reference child process", f"exited with status {child.returncode}")
        else:
            results = json.loads((out / "results.json").read_text())
            for case, rec in zip(forward, results["forward"]):
                compare_forward(t, case, rec, out)
            for case, rec in zip(reverse, results["reverse"]):
                compare_reverse(t, case, rec)
    if t.limits:
        print(f"interop: {len(t.limits)} reference limitations (listed above as LIMIT)")
    print(f"interop: finished in {time.perf_counter() - t0:.1f} s")
    print(f"interop: {t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
