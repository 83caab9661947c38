"""Mutation fuzzing of `.tet` readers: every hostile file must end in a `TetError`.

Base files are the reference corpus (``../shared/interop/files``,
``../shared/upstream-fixtures``) and files our writer produces here (every dtype, raw
and zstd, footers with metadata, a metadata spill).  Case ``i`` of seed ``S`` picks a
base file and a mutation from ``random.Random(f"{S}:{i}")``: bit flips, boundary values
in one or more header/index/footer fields, shapes whose product wraps 64 bits,
truncations, overlapping rows, corrupted zstd frames, hostile footer JSON.  Each case
is opened, read (``read_numpy``, slicing, zero-copy), queried (scalar and partial
folds, strided selections, median, histogram, covariance and correlation, a
transform, plan-only), written out (spills, transform spills and sidecars into the
case's directory, an allowed root), read through ``to_dask``, the xarray backend
(whole and on dask chunks), ``query_many`` and ``tet.export``, repaired on a copy
(plan, dry run, apply) and, for a sample, run through ``tet verify --deep`` and
``tet info``.  Footer mutations include escapes JSON allows but UTF-8 cannot hold
(lone surrogates) next to valid pairs, deep nesting, huge numbers and duplicate dim
names; header mutations include zero extents.

Cases run in worker processes (many cases each) under an address-space limit; a worker
announces a case before running it, the parent watches it with a timeout and restarts
a worker that crashed, hung or breached the memory limit.  Outcomes are counted; any
crash, hang, non-`TetError` exception or limit breach makes the run fail, printing a
reproducer and saving the file under ``build/fuzz/``.

    python tools/fuzz.py --cases 20000 --seed 1
    python tools/fuzz.py --seed 1 --replay 1234     # one case, in this process
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS_GLOBS = [(SHARED / "interop" / "files", "*.tet"),
                (SHARED / "upstream-fixtures", "**/*.tet")]
OUT = REPO / "build" / "fuzz"
U64 = 2**64 - 1

# ---------------------------------------------------------------------------
# base files


def generated_bases(where: Path) -> list[Path]:
    """Files our writer produces, byte-for-byte the same on every run (fixed clock)."""
    import numpy as np

    import tet
    from tet import dtypes
    from tet.writer import TetWriter

    where.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    out: list[Path] = []

    def writer(name: str) -> tuple[Path, TetWriter]:
        path = where / name
        w = TetWriter.create(path, tool="fuzz", clock=lambda: "1700000000")
        w.push_history_event("write", "fuzz")
        return path, w

    for dt in dtypes.DTYPES:
        for codec in ("raw", "zstd"):
            shape = (5, 7) if dt.tag % 2 else (3, 4, 5)
            chunk = (2, 3) if len(shape) == 2 else (2, 3, 2)
            if dt.numpy.kind == "f":
                a = rng.normal(size=shape).astype(dt.numpy)
                a.flat[3] = np.nan
                a.flat[5] = np.inf
            else:
                info = np.iinfo(dt.numpy)
                a = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape,
                                 dtype=dt.numpy, endpoint=True)
            path, w = writer(f"gen-{dt.name}-{codec}.tet")
            w.write_dataset("v", a, chunk_shape=chunk, codec=codec,
                            attrs={"units": "K", "_FillValue": "7"},
                            dim_names=[f"d{k}" for k in range(len(shape))],
                            coords={"d0": [f"l{k}" for k in range(shape[0])]})
            w.commit(fsync=False)
            out.append(path)
    path, w = writer("gen-multi.tet")
    w.write_dataset("a", np.arange(24, dtype=np.float32).reshape(4, 6), chunk_shape=(3, 4))
    w.write_dataset("b", np.arange(10, dtype=np.int64), chunk_shape=(4,), codec="zstd")
    w.write_dataset("c", np.ones((2, 2, 2, 2), np.uint8), chunk_shape=(1, 2, 1, 2))
    w.set_execution(memory_budget_bytes=1 << 20)
    w.commit(fsync=False)
    out.append(path)
    path, w = writer("gen-spill.tet")  # metadata too large to inline: a metadata_ref spill
    w.write_dataset("grid", np.arange(12, dtype=np.float64).reshape(3, 4), chunk_shape=(2, 2),
                    codec="zstd", attrs={f"k{i}": "v" * 1000 for i in range(64)})
    w.commit(fsync=False)
    out.append(path)
    with tet.open(path) as f:
        assert f.metadata["datasets"]["grid"]["attrs"]["k0"] == "v" * 1000
    return out


def corpus_bases() -> list[Path]:
    found: list[Path] = []
    for root, pattern in CORPUS_GLOBS:
        if root.is_dir():
            found.extend(sorted(root.glob(pattern)))
    return found


# ---------------------------------------------------------------------------
# the fields of a (valid) base file


def _align8(n: int) -> int:
    return (n + 7) & ~7


def layout_fields(buf: bytes) -> tuple[list[tuple[str, int, int]], list[tuple[int, int, int]]]:
    """(name, offset, width) of every header, directory, index and footer-tail field,
    and (offset, stored, codec) of every payload."""
    n = len(buf)
    f: list[tuple[str, int, int]] = [("sb.magic", 0, 4), ("sb.version", 4, 4),
                                     ("sb.count", 8, 4), ("sb.flags", 12, 4),
                                     ("sb.index_off", 16, 8), ("sb.index_len", 24, 8)]
    payloads: list[tuple[int, int, int]] = []
    if n < 40:
        return f, payloads
    count = struct.unpack_from("<I", buf, 8)[0]
    f.append(("dir.blob_len", 32, 8))
    at = 40
    for i in range(min(count, 64)):
        if at + 16 > n:
            break
        name_len, _, ndim, _ = struct.unpack_from("<IIII", buf, at)
        f += [(f"rec{i}.name_len", at, 4), (f"rec{i}.dtype", at + 4, 4),
              (f"rec{i}.ndim", at + 8, 4), (f"rec{i}.reserved", at + 12, 4)]
        dims = at + _align8(16 + name_len)
        if not 1 <= ndim <= 8 or dims + 16 * ndim > n:
            break
        f += [(f"rec{i}.shape{d}", dims + 8 * d, 8) for d in range(ndim)]
        f += [(f"rec{i}.chunk{d}", dims + 8 * (ndim + d), 8) for d in range(ndim)]
        at = dims + 16 * ndim
    index_off = struct.unpack_from("<Q", buf, 16)[0]
    if index_off + 32 <= n:
        f += [("tidx.magic", index_off, 4), ("tidx.version", index_off + 4, 4),
              ("tidx.entry_count", index_off + 8, 8), ("tidx.bps", index_off + 16, 2),
              ("tidx.reserved16", index_off + 18, 2), ("tidx.budget", index_off + 20, 4),
              ("tidx.reserved", index_off + 24, 8)]
        rows = struct.unpack_from("<Q", buf, index_off + 8)[0]
        for r in range(min(rows, (n - index_off - 32) // 104)):
            b = index_off + 32 + 104 * r
            f += [(f"row{r}.dataset_id", b, 8)]
            f += [(f"row{r}.chunk_index{k}", b + 8 + 8 * k, 8) for k in range(8)]
            f += [(f"row{r}.payload_offset", b + 72, 8), (f"row{r}.raw", b + 80, 8),
                  (f"row{r}.stored", b + 88, 8), (f"row{r}.codec", b + 96, 4),
                  (f"row{r}.reserved", b + 100, 4)]
            off, _, stored, codec = struct.unpack_from("<QQQI", buf, b + 72)
            payloads.append((off, stored, codec))
    if n >= 16 and buf[-4:] == b"THST":
        f += [("footer.json_len", n - 16, 8), ("footer.version", n - 8, 4),
              ("footer.magic", n - 4, 4)]
    return f, payloads


# ---------------------------------------------------------------------------
# mutations


def boundary_values(n: int, original: int, width: int) -> list[int]:
    bits = 8 * width
    top = (1 << bits) - 1
    values = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 104, 255, 256, 2**15 - 1, 2**15,
              2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**53, 2**62,
              2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1, n, n - 1, n + 1, n - 16,
              n // 2, original + 1, original - 1, original * 2, original + 2**32,
              top - original]
    return [v & top for v in values if v >= 0]


def _put(b: bytearray, at: int, width: int, value: int) -> None:
    if at >= 0 and at + width <= len(b):
        b[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def _get(b: bytes, at: int, width: int) -> int:
    return int.from_bytes(b[at : at + width], "little")


def _deep(depth: int) -> bytes:
    return b'{"history":[],"metadata":{"file":{"tool":' + b"[" * depth + b"]" * depth + b"}}}"


FOOTER_BODIES: list[Callable[[random.Random, int], bytes]] = [
    lambda r, n: _deep(r.choice([65, 100, 1000, 20000])),
    lambda r, n: b"\xff\xfe" + b"x" * r.randrange(0, 40),
    lambda r, n: b'{"history":[],"metadata":{"x":' + b"9" * 5000 + b"}}",
    lambda r, n: b'{"history":{"a":1},"metadata":[]}',
    lambda r, n: b'{"history":[["a","b"]],"metadata":{}}',
    lambda r, n: b'{"history":[],"metadata":{"datasets":{"v":{"attrs":{"a":1}}}}}',
    lambda r, n: b'{"history":[],"metadata":{"datasets":{"v":{"coords":{"0":7}}}}}',
    lambda r, n: b'{"history":[],"metadata":{"file":NaN,"datasets":{"v":{"dim_names":[1]}}}}',
    lambda r, n: (b'{"history":[],"metadata_ref":{"offset":%d,"len":%d}}'
                  % (r.choice([0, 1, n - 20, n, 2**63, 2**64 - 1, 10**30]),
                     r.choice([0, 2, 17, n, 2**24, 2**64 - 1]))),
    lambda r, n: b'{"history":[],"metadata_ref":{"offset":-1,"len":3},"x_ref":{"offset":0}}',
    lambda r, n: b"[" * 70000,
    lambda r, n: b'{"history":[' + b'{"op":"w","source":"s","at":"1"},' * 3000 + b"{}]}",
]


def _footer_doc(base: bytes) -> tuple[int, Any] | None:
    """(where the footer JSON starts, its parsed value) of a flagged base file."""
    n = len(base)
    if n < 48 or base[-4:] != b"THST" or not _get(base, 12, 4) & 1:
        return None
    at = n - 16 - _get(base, n - 16, 8)
    try:
        doc = json.loads(base[at : n - 16])
    except ValueError:
        return None
    return (at, doc) if isinstance(doc, dict) else None


def _strings(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """(path, is_key) of every string in a parsed JSON value."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*path, k), True
            yield from _strings(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _strings(v, (*path, i))
    elif isinstance(doc, str):
        yield path, False


def _swap_string(doc: Any, path: tuple[Any, ...], is_key: bool, new: str) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        if is_key and not rest:
            return {(new if k == head else k): v for k, v in doc.items()}
        return {k: (_swap_string(v, rest, is_key, new) if k == head else v)
                for k, v in doc.items()}
    return [(_swap_string(v, rest, is_key, new) if i == head else v) for i, v in enumerate(doc)]


# Text JSON can escape but UTF-8 cannot hold (lone surrogates), and text it can (pairs).
SURROGATES = [r"\ud800", r"x\udfff", r"\udc80y", r"\udbff\udbff", r"a\ud83d", r"\ude00b"]
PAIRS = [r"\ud83d\ude00", r"\u00e9\u4e2d", r"\ud800\udc00", r"\\ud800"]
HUGE_NUMBERS = [b"1e400", b"-1e400", b"18446744073709551616", b"1" + b"0" * 400, b"-0",
                b"9" * 5000, b"1.5e-400", b"NaN", b"Infinity"]


FOOTER_EDITS = ("surrogate", "pair", "dup_dims", "huge", "deep", "dims_len")


def _edit_footer(base: bytes, rng: random.Random, style: str | None = None
                 ) -> tuple[bytes, str] | None:
    """The base's own footer with one structural edit (`style`, default a random one of
    `FOOTER_EDITS`); its out-of-line regions are kept where they are."""
    found = _footer_doc(base)
    if found is None:
        return None
    at, doc = found
    style = rng.choice(FOOTER_EDITS) if style is None else style
    text: bytes | None = None
    if style in ("surrogate", "pair"):
        spots = list(_strings(doc))
        if not spots:
            return None
        path, is_key = rng.choice(spots)
        marker = "@@MARK@@"  # replaced by the raw escape text after encoding
        text = json.dumps(_swap_string(doc, path, is_key, marker), separators=(",", ":")
                          ).encode()
        escape = rng.choice(SURROGATES if style == "surrogate" else PAIRS)
        text = text.replace(marker.encode(), escape.encode())
        what = f"{'/'.join(map(str, path))}{' (key)' if is_key else ''} = {escape}"
    elif style in ("dup_dims", "dims_len"):
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        entries = meta.get("datasets") if isinstance(meta, dict) else None
        if not isinstance(entries, dict) or not entries:
            return None
        for entry in entries.values():
            dims = entry.get("dim_names") if isinstance(entry, dict) else None
            if isinstance(dims, list) and dims:
                entry["dim_names"] = [dims[0]] * len(dims) if style == "dup_dims" else \
                    [*dims, "extra"]
        what = style
    elif style == "huge":
        number = rng.choice(HUGE_NUMBERS)
        text = json.dumps({**doc, "x": "MARK"}, separators=(",", ":")).encode().replace(
            b'"MARK"', number)
        what = f"x = {number[:20]!r}"
    else:
        depth = rng.choice([60, 61, 62, 63, 64, 65])
        text = json.dumps({**doc, "x": "MARK"}, separators=(",", ":")).encode().replace(
            b'"MARK"', b"[" * depth + b"]" * depth)
        what = f"nested {depth}"
    if text is None:
        text = json.dumps(doc, separators=(",", ":")).encode()
    return base[:at] + text + struct.pack("<QI4s", len(text), 1, b"THST"), what


def mutate(base: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One hostile variant of `base` and a description of what was done."""
    b = bytearray(base)
    n = len(b)
    fields, payloads = layout_fields(base)
    kind = rng.choices(["flip", "flip_header", "field", "fields", "wrap", "truncate", "extend",
                        "overlap", "zstd", "footer", "footer_edit", "zero"],
                       weights=[12, 14, 25, 10, 8, 9, 2, 8, 8, 4, 6, 3])[0]
    if kind == "footer_edit":
        edited = _edit_footer(base, rng)
        if edited is not None:
            return edited[0], f"footer_edit {edited[1]}"
        kind = "footer"
    if kind == "zero":
        extents = [(name, at) for name, at, _ in fields if ".shape" in name or ".chunk" in name]
        if extents:
            name, at = rng.choice(extents)
            _put(b, at, 8, 0)
            return bytes(b), f"zero {name}"
        kind = "field"
    what: list[str] = [kind]
    header_end = min(n, _get(base, 16, 8) + _get(base, 24, 8)) if n >= 32 else n
    if kind in ("flip", "flip_header"):
        hi = max(1, header_end if kind == "flip_header" else n)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(hi)
            bit = rng.randrange(8)
            b[at] ^= 1 << bit
            what.append(f"{at}^{1 << bit}")
    elif kind in ("field", "fields"):
        for _ in range(1 if kind == "field" else rng.randint(2, 3)):
            name, at, width = rng.choice(fields)
            value = rng.choice(boundary_values(n, _get(base, at, width), width))
            _put(b, at, width, value)
            what.append(f"{name}={value}")
    elif kind == "wrap":
        recs = sorted({name.split(".")[0] for name, _, _ in fields if name.startswith("rec")
                       and ".shape" in name})
        if recs:
            rec = rng.choice(recs)
            dims = [(at, w) for name, at, w in fields if name.startswith(rec + ".shape")]
            chunks = [(at, w) for name, at, w in fields if name.startswith(rec + ".chunk")]
            nd = len(dims)
            per = rng.choice([-(-64 // nd), 64 // nd + 1, 63 // nd + 1, 32])
            style = rng.choice(["one-tile", "unit-chunk", "keep-chunk"])
            for (at, w), (cat, _) in zip(dims, chunks, strict=True):
                extent = 1 << min(per, 63)
                if rng.random() < 0.3:
                    extent = rng.choice([3, 2**63 - 1, 2**62 + 1, U64])
                _put(b, at, w, extent)
                if style == "one-tile":
                    _put(b, cat, 8, extent)
                elif style == "unit-chunk":
                    _put(b, cat, 8, 1)
            what.append(f"{rec} 2^{per}x{nd} {style}")
            rows = [(name.split(".")[0], at) for name, at, _ in fields
                    if name.endswith(".raw")]
            if rows and rng.random() < 0.7:
                _, at = rng.choice(rows)
                _put(b, at, 8, 0)
                _put(b, at + 8, 8, 0)  # stored follows raw
                for k in range(8):
                    _put(b, at - 72 + 8 + 8 * k, 8, 0)
                what.append("row raw=stored=0 at origin")
    elif kind == "truncate":
        cuts = [at for _, at, _ in fields] + [header_end, n - 16, n - 1, n // 2]
        cut = rng.choice(cuts) + rng.choice([-1, 0, 1, 3]) if rng.random() < 0.6 else \
            rng.randrange(n)
        cut = max(0, min(n, cut))
        del b[cut:]
        what.append(f"at {cut}")
    elif kind == "extend":
        extra = rng.choice([1, 7, 16, 100, 4096])
        b += bytes(rng.randrange(256) for _ in range(extra)) if rng.random() < 0.5 else \
            bytes(extra)
        what.append(f"+{extra}")
    elif kind == "overlap":
        rows = [at for name, at, _ in fields if name.endswith(".payload_offset")]
        if rows:
            i, j = rng.choice(rows), rng.choice(rows)
            style = rng.choice(["same", "into-header", "stored+", "shifted"])
            if style == "same":
                _put(b, i, 8, _get(base, j, 8))
            elif style == "into-header":
                _put(b, i, 8, rng.randrange(max(1, header_end)))
            elif style == "stored+":
                _put(b, i + 16, 8, _get(base, i + 16, 8) + rng.choice([1, 8, 4096]))
            else:
                _put(b, i, 8, _get(base, i, 8) + rng.choice([1, 2, 4, 8, -1, -8]))
            what.append(f"{style} {i} {j}")
    elif kind == "zstd":
        frames = [(o, s) for o, s, c in payloads if c == 1 and s > 4 and o + s <= n]
        if frames:
            o, s = rng.choice(frames)
            style = rng.choice(["header", "body", "magic", "content-size"])
            if style == "header":
                for _ in range(rng.randint(1, 4)):
                    b[o + rng.randrange(min(s, 18))] ^= 1 << rng.randrange(8)
            elif style == "body":
                for _ in range(rng.randint(1, 8)):
                    b[o + rng.randrange(s)] = rng.randrange(256)
            elif style == "magic":
                b[o : o + 4] = b"\x28\xb5\x2f\xfe"
            else:  # frame header descriptor: force an 8-byte content size, then lie in it
                b[o + 4] = (b[o + 4] & 0x3F) | 0xC0
                if o + 14 <= n:
                    _put(b, o + 6, 8, rng.choice([0, 1, 2**31, 2**40, 2**63, U64]))
            what.append(f"{style} frame at {o}+{s}")
    else:  # footer
        body = rng.choice(FOOTER_BODIES)(rng, n)
        tail_ok = n >= 16 and base[-4:] == b"THST"
        keep = n - 16 - _get(base, n - 16, 8) if tail_ok else n
        del b[max(0, keep):]
        if n >= 16:
            flags = _get(base, 12, 4) | 1
            _put(b, 12, 4, flags)
        b += body + struct.pack("<QI4s", len(body), 1, b"THST")
        what.append(f"{len(body)} bytes: {body[:40]!r}")
    return bytes(b), " ".join(what)


# ---------------------------------------------------------------------------
# one case: open, read, query (in a worker)


def _selection(rng: random.Random, shape: tuple[int, ...]) -> list[dict[str, int]]:
    sel = []
    for n in shape:
        axis: dict[str, int] = {}
        if n > 1 and rng.random() < 0.5:
            s = rng.randrange(min(n, 1 << 62))
            axis["start"] = s
            if rng.random() < 0.5:
                axis["stop"] = rng.randint(s + 1, min(n, s + (1 << 62)))
        if rng.random() < 0.5:
            axis["step"] = rng.choice([1, 2, 3, 7, 2**31, 2**63, U64 - 1, U64])
        sel.append(axis)
    return sel


def _ops(f: Any, rng: random.Random, where: Path, extended: bool = True
         ) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Operations on the open file `f`; with `extended`, also outputs (spills, transform
    spills, sidecars: under `where`, the case's directory inside the worker's temp dir,
    an allowed root) and dask arrays."""
    import tet

    yield "summary", lambda: json.dumps(f.summary())
    yield "metadata", lambda: (f.metadata, f.history, f.file_execution)
    names = f.datasets()
    for k, name in enumerate(names[:3]):
        ds = f.dataset(name)
        shape = ds.shape
        nd = len(shape)
        sel = _selection(rng, shape)
        first = [{"start": 0, "stop": min(c, n)} for c, n in zip(ds.chunk_shape, shape)]
        part = [rng.randrange(nd)] if nd > 1 else []  # a partial reduction where possible
        yield "read_numpy", lambda n=name: f.read_numpy(n)
        yield "read_sel", lambda n=name, s=sel: f.read_numpy(n, s)
        yield "zero_copy", lambda n=name, s=first: f.read_numpy(n, s, copy=None)
        # in range for the declared shape (an index past it is an IndexError, as in NumPy)
        keys = tuple(slice(None, None, rng.choice([1, 2, 5, 2**70])) if rng.random() < 0.6 or not n
                     else rng.randrange(-min(n, 3), min(n, 3)) for n in shape)
        yield "slice", lambda d=ds, k=keys: d[k]
        yield "mean", lambda n=name: f.mean(n)
        yield "max_axis", lambda n=name, a=part: f.max(n, axes=a)
        yield "sum_sel", lambda n=name, s=sel, a=part: f.query(
            {"dataset": n, "sum": a, "selection": s})
        yield "nan_count", lambda n=name, s=sel: f.query(
            {"dataset": n, "nan_count": [], "selection": s})
        yield "null_count", lambda n=name: f.null_count(n, fill=0.0)
        yield "median", lambda n=name, s=sel: f.median(n, selection=s)
        yield "quantile_axis", lambda n=name, a=part: f.quantile(n, 0.25, axes=a)
        yield "histogram", lambda n=name, a=part: f.histogram(n, 4, axes=a, min=-3.0, max=3.0)
        yield "histogram_auto", lambda n=name, s=sel: f.histogram(n, 3, selection=s)
        yield "zscore", lambda n=name, a=part: f.transform.to_numpy.zscore(n, axes=a)
        yield "plan", lambda n=name, s=sel: json.dumps(f.plan_only(
            {"dataset": n, "mean": [], "selection": s}))
        yield "preview", lambda n=name: f.query_execute({"dataset": n}, preview=5)
        if nd == 2:  # the matrix operations need a rank-2 selection
            obs = rng.randrange(2)
            yield "covariance", lambda n=name, a=obs: f.covariance(n, a)
            yield "correlation", lambda n=name, a=obs, s=sel: f.correlation(n, 1 - a,
                                                                             selection=s)
        if not extended:
            continue
        spill, side = where / f"spill-{k}.bin", where / f"side-{k}.tet"
        yield "read_spill", lambda n=name, s=sel, p=spill: f.read_spill(n, p, selection=s)
        yield "transform_spill", lambda n=name, a=part, p=where / f"t-{k}.bin": (
            f.transform.to_spill.minmax(n, axes=a, path=p))
        yield "sidecar", lambda n=name, p=side: f.transform.to_sidecar.l2(n, path=p)
        yield "sidecar_read", lambda p=side: tet.open(p).close() if p.exists() else None
        yield "to_dask", lambda n=name: tet.to_dask(f, n).compute()
        yield "to_dask_sel", lambda n=name, s=sel: tet.to_dask(f, n, selection=s,
                                                               block_bytes=64).compute()


def _file_ops(path: Path, names: list[str], where: Path
              ) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Operations that open the file themselves: export, the xarray backend (whole and
    on dask chunks), query_many."""
    import tet

    yield "export", lambda: tet.export(path, where / "x.zarr", fsync=False)
    try:
        import xarray as xr
    except ImportError:  # the xarray extra is not installed here
        xr = None
    if xr is not None:
        yield "xarray", lambda: xr.open_dataset(path, engine="tet").load()
        yield "xarray_chunks", lambda: xr.open_dataset(path, engine="tet", chunks={}).load()
    if names:
        doc = {"dataset": names[0], "mean": []}
        yield "query_many", lambda: tet.query_many([path, path], doc, max_workers=2)
        yield "query_many_combine", lambda: tet.query_many([path, path], doc, combine=True,
                                                           max_workers=1)


def _repair(path: Path, where: Path) -> None:
    """verify's repair plan, a dry run and the repairs themselves, on a copy."""
    from tet import verify

    copy = where / "repair.tet"
    shutil.copyfile(path, copy)
    codes = sorted(verify.REPAIRABLE_CODES)
    verify.repair_plan(copy)
    verify.repair(copy, codes, dry_run=True)
    verify.repair(copy, codes)


def _cli(argv: list[str]) -> None:
    from tet.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    os.environ["TET_DEBUG"] = "1"  # exceptions propagate: we classify them ourselves
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
    finally:
        del os.environ["TET_DEBUG"]


UNCHECKED_SHARE = 0.25  # cases run without the Python size checks: the C must hold alone
EXTENDED_SHARE = 0.3  # cases that also write outputs and go through dask, xarray, export,
                      # query_many and repair (several times slower per case)


@contextlib.contextmanager
def size_checks(enabled: bool) -> Iterator[None]:
    """With `enabled` False, the catalog's and the planner's 63-bit size checks only
    bound each extent (as a count that fits would), so products that wrap reach the
    kernels, which must refuse them themselves."""
    from tet import layout
    from tet.errors import CatalogError
    from tet.query import plan

    def extents_only(i: int | None, name: str, dtype: int, shape: Any) -> None:
        if any(n >= 2**63 for n in shape):
            raise CatalogError(f"dataset {name!r}: an extent of {list(shape)} is >= 2**63")

    saved = layout.check_size
    if not enabled:
        layout.check_size = plan.check_size = extents_only
    try:
        yield
    finally:
        layout.check_size = plan.check_size = saved


def run_case(path: Path, rng: random.Random, *, cli: bool, unchecked: bool = False,
             extended: bool = True) -> dict[str, Any]:
    """Every operation on the file at `path`; the first failure of each kind decides.
    `extended` adds outputs, dask, xarray, export, query_many and repair (slower)."""
    with size_checks(not unchecked):
        return _run_case(path, rng, cli=cli, extended=extended)


def _run_case(path: Path, rng: random.Random, *, cli: bool, extended: bool) -> dict[str, Any]:
    import tet

    result: dict[str, Any] = {"outcome": "ok"}
    errors: list[tuple[str, BaseException]] = []

    def attempt(op: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except tet.TetError as exc:
            errors.append((op, exc))
        except Exception as exc:
            result.update(outcome=f"exception:{type(exc).__name__}", op=op, detail=str(exc)[:500],
                          tb=traceback.format_exc()[-4000:])
        return False

    f: Any = None

    def opener() -> None:
        nonlocal f
        f = tet.open(path)

    where = path.parent
    if attempt("open", opener):
        names: list[str] = []
        try:
            names = f.datasets()
            for op, fn in _ops(f, rng, where, extended):
                attempt(op, fn)
                if result["outcome"] != "ok":
                    break
        finally:
            f.close()
        if extended and result["outcome"] == "ok":
            for op, fn in _file_ops(path, names, where):
                attempt(op, fn)
                if result["outcome"] != "ok":
                    break
    if extended and result["outcome"] == "ok":
        attempt("repair", lambda: _repair(path, where))
    if cli and result["outcome"] == "ok":
        attempt("cli-verify", lambda: _cli(["verify", "--deep", str(path)]))
        if result["outcome"] == "ok":
            attempt("cli-info", lambda: _cli(["info", str(path)]))
    if result["outcome"] == "ok" and errors:
        op, exc = errors[0]
        result.update(outcome=f"TetError:{type(exc).__name__}", op=op, detail=str(exc)[:300])
    return result


class Cases:
    """Case `i` of a seed: its base file, its bytes and its description."""

    def __init__(self, seed: int, bases: list[Path], cli_every: int) -> None:
        self.seed, self.bases, self.cli_every = seed, bases, cli_every
        self._bytes: dict[int, bytes] = {}

    def rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{i}")

    def make(self, i: int) -> tuple[bytes, str, random.Random, dict[str, bool]]:
        rng = self.rng(i)
        k = rng.randrange(len(self.bases))
        if k not in self._bytes:
            self._bytes[k] = self.bases[k].read_bytes()
        data, what = mutate(self._bytes[k], rng)
        flags = {"cli": self.cli_every > 0 and rng.randrange(self.cli_every) == 0,
                 "unchecked": rng.random() < UNCHECKED_SHARE,
                 "extended": rng.random() < EXTENDED_SHARE}
        if flags["unchecked"]:
            what += " [kernels alone: no 63-bit size check in Python]"
        return data, f"{self.bases[k].name}: {what}", rng, flags


# ---------------------------------------------------------------------------
# worker process


def case_environment() -> Path:
    """A private cache/temp dir (spills, query history) and the budget of a host with
    1 GiB available (default budgets of 256 MiB, whatever this machine has)."""
    work = Path(tempfile.mkdtemp(prefix="tet-fuzz-"))
    for var in ("XDG_CACHE_HOME", "TMPDIR"):
        os.environ[var] = str(work)
    os.environ["TET_QUERY_HISTORY_FILE"] = str(work / "qhist.jsonl")
    from tet.query import budget

    budget._read_available = lambda: 1 << 30
    with contextlib.suppress(ImportError):  # dask blocks in the case's thread: no pool
        import dask

        dask.config.set(scheduler="synchronous")
    return work


def _inject(i: int, spec: dict[str, Any]) -> None:
    """Test hooks: fail on purpose in one case so the parent's detection can be tested."""
    inject = spec.get("inject", {})
    if i == inject.get("crash"):
        os.abort()
    if i == inject.get("hang"):
        time.sleep(3600)
    if i == inject.get("error"):
        raise ValueError("injected")
    if i == inject.get("breach"):
        hog = bytearray(inject["breach_bytes"])
        hog[::4096] = b"x" * len(hog[::4096])


def peak_rss() -> int:
    """This process image's peak RSS (VmHWM); ru_maxrss would start from the RSS of
    the process that forked it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(manifest: Path, as_limit: int, rss_limit: int) -> int:
    import resource

    spec = json.loads(manifest.read_text())
    if as_limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library output goes to the log, the protocol stays clean
    work = case_environment()
    cases = Cases(spec["seed"], [Path(p) for p in spec["bases"]], spec["cli_every"])
    for line in sys.stdin:
        i = int(line)
        proto.write(json.dumps({"start": i}) + "\n")
        data, what, rng, flags = cases.make(i)
        where = work / f"case-{i}"  # the case's file and every output of it
        where.mkdir()
        path = where / "case.tet"
        path.write_bytes(data)
        try:
            result = run_case(path, rng, **flags)
            try:
                _inject(i, spec)
            except ValueError as exc:
                result.update(outcome=f"exception:{type(exc).__name__}", op="inject",
                              detail=str(exc))
        finally:
            shutil.rmtree(where, ignore_errors=True)
        peak = peak_rss()
        result.update(done=i, what=what, rss=peak)
        if peak > rss_limit:
            result["breach"] = True
        proto.write(json.dumps(result) + "\n")
        if peak > rss_limit:
            return 0  # the parent starts a fresh worker (ru_maxrss never goes down)
    return 0


# ---------------------------------------------------------------------------
# parent


class Worker:
    def __init__(self, index: int, manifest: Path, args: argparse.Namespace) -> None:
        self.index = index
        self.log = args.out / f"worker-{index}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(manifest),
               "--as-limit", str(args.as_limit), "--rss-limit", str(args.rss_limit)]
        self.logfh = open(self.log, "ab")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.logfh, cwd=REPO, bufsize=0)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.buf = b""
        self.case: int | None = None
        self.started = 0.0

    def send(self, i: int) -> None:
        assert self.proc.stdin is not None
        self.case, self.started = i, time.monotonic()
        self.proc.stdin.write(f"{i}\n".encode())

    def lines(self) -> tuple[list[dict[str, Any]], bool]:
        """Complete protocol lines available now, and whether the worker closed."""
        assert self.proc.stdout is not None
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        self.buf += chunk
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out, not chunk

    def stop(self, kill: bool = False) -> int:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        if kill:
            self.proc.kill()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.logfh.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _signal_name(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal-{-code}"
    return f"exit-{code}"


FAILING = ("crash:", "hang", "exception:", "breach")


def parent(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("worker-*.log"):
        old.unlink()
    bases = corpus_bases() + generated_bases(args.out / "base")
    manifest = args.out / "manifest.json"
    inject = {k: getattr(args, f"inject_{k}") for k in ("crash", "hang", "error", "breach")
              if getattr(args, f"inject_{k}") is not None}
    inject["breach_bytes"] = args.rss_limit + (64 << 20)
    manifest.write_text(json.dumps({"seed": args.seed, "bases": [str(p) for p in bases],
                                    "cli_every": args.cli_every, "inject": inject}))
    cases = Cases(args.seed, bases, args.cli_every)
    counts: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, Any]] = []
    pending = iter(range(args.start, args.start + args.cases))
    started = time.monotonic()
    deadline = started + args.time if args.time else None
    workers = {w: Worker(w, manifest, args) for w in range(args.workers)}
    done = 0
    exhausted = False

    peak = [0, -1]  # the highest worker RSS seen, and the case that reached it

    def record(i: int, outcome: str, extra: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if extra.get("rss", 0) > peak[0]:
            peak[:] = [extra["rss"], i]
        counts[outcome] += 1
        if outcome.startswith(FAILING):
            data, what, _, _ = cases.make(i)
            saved = args.out / f"seed-{args.seed}-case-{i}.tet"
            saved.write_bytes(data)
            failures.append({"case": i, "outcome": outcome, "what": what, "file": str(saved),
                             **extra})

    def feed(w: Worker) -> bool:
        nonlocal exhausted
        if exhausted or (deadline is not None and time.monotonic() > deadline):
            exhausted = True
            return False
        i = next(pending, None)
        if i is None:
            exhausted = True
            return False
        w.send(i)
        return True

    for w in list(workers.values()):
        if not feed(w):
            break
    while any(w.case is not None for w in workers.values()):
        busy = {w.proc.stdout.fileno(): w for w in workers.values()  # type: ignore[union-attr]
                if w.case is not None}
        now = time.monotonic()
        wait = max(0.01, min(w.started + args.timeout - now for w in busy.values()))
        ready, _, _ = select.select(list(busy), [], [], wait)
        for fd in ready:
            w = busy[fd]
            msgs, closed = w.lines()
            for msg in msgs:
                if "start" in msg:
                    w.started = time.monotonic()
                    continue
                outcome = "breach" if msg.get("breach") else msg["outcome"]
                record(msg["done"], outcome, {k: msg[k] for k in ("op", "detail", "tb", "rss")
                                              if k in msg})
                w.case = None
                if msg.get("breach"):
                    closed = True
                elif not feed(w):
                    pass
            if closed:
                code = w.stop()
                if w.case is not None:  # died inside a case
                    record(w.case, f"crash:{_signal_name(code)}", {"log": w.log_tail()})
                workers[w.index] = nw = Worker(w.index, manifest, args)
                feed(nw)
        now = time.monotonic()
        for w in list(workers.values()):
            if w.case is not None and now - w.started > args.timeout and w.proc.stdout and \
                    w.proc.stdout.fileno() not in ready:
                case = w.case
                w.stop(kill=True)
                record(case, "hang", {"log": w.log_tail()})
                workers[w.index] = nw = Worker(w.index, manifest, args)
                feed(nw)
    for w in workers.values():
        w.stop()
    elapsed = time.monotonic() - started
    print(f"fuzz: seed {args.seed}, {done} cases from {len(bases)} base files in "
          f"{elapsed:.1f} s ({args.workers} workers, {args.timeout:g} s timeout, "
          f"address space {args.as_limit >> 20} MiB); peak worker RSS {peak[0] >> 20} MiB "
          f"(reached in case {peak[1]})")
    width = max((len(k) for k in counts), default=0)
    for outcome, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {outcome:<{width}}  {n}")
    if failures:
        print(f"FAILED: {len(failures)} case(s) crashed, hung, raised a non-TetError or "
              "breached the memory limit", file=sys.stderr)
        for fail in failures[:20]:
            print(f"\ncase {fail['case']}: {fail['outcome']} ({fail['what']})", file=sys.stderr)
            for key in ("op", "detail", "rss"):
                if key in fail:
                    print(f"  {key}: {fail[key]}", file=sys.stderr)
            if "tb" in fail:
                print("  " + fail["tb"].rstrip().replace("\n", "\n  "), file=sys.stderr)
            if "log" in fail:
                print("  worker log:\n    " + fail["log"].replace("\n", "\n    "),
                      file=sys.stderr)
            print(f"  file: {fail['file']}\n  reproduce: {sys.executable} tools/fuzz.py "
                  f"--seed {args.seed} --replay {fail['case']}"
                  + (f" --out {args.out}" if args.out != OUT else ""), file=sys.stderr)
        return 1
    return 0


def replay(args: argparse.Namespace) -> int:
    bases = corpus_bases() + generated_bases(args.out / "base")
    cases = Cases(args.seed, bases, args.cli_every)
    data, what, rng, flags = cases.make(args.replay)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"seed-{args.seed}-case-{args.replay}.tet"
    path.write_bytes(data)
    print(f"case {args.replay}: {what}\nfile: {path}", flush=True)
    where = case_environment() / "case"
    where.mkdir()
    shutil.copyfile(path, where / "case.tet")
    result = run_case(where / "case.tet", rng, **flags)
    print(result.pop("tb", ""))
    print(json.dumps(result, indent=2))
    return 0 if not result["outcome"].startswith(FAILING) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=20_000, help="how many cases (default 20000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="first case id")
    p.add_argument("--time", type=float, default=0, help="stop starting cases after T seconds")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--timeout", type=float, default=10.0, help="per-case limit in seconds")
    p.add_argument("--as-limit", type=int, default=4 << 30,
                   help="RLIMIT_AS of a worker in bytes (0: none, as under ASan)")
    p.add_argument("--rss-limit", type=int, default=1 << 30,
                   help="peak RSS of a worker that counts as a memory limit breach")
    p.add_argument("--cli-every", type=int, default=40,
                   help="run tet verify --deep and tet info on about 1 case in N (0: never)")
    p.add_argument("--replay", type=int, help="run one case in this process and show it")
    p.add_argument("--out", type=Path, default=OUT,
                   help="where failing files, worker logs and base files go (build/fuzz)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    for hook in ("crash", "hang", "error", "breach"):  # tests of the harness itself
        p.add_argument(f"--inject-{hook}", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    sys.path.insert(0, str(REPO))
    if args.worker is not None:
        return worker(args.worker, args.as_limit, args.rss_limit)
    if args.replay is not None:
        return replay(args)
    return parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
