"""The reference side of ``tools/interop.py``; runs under ``.venv-ref``'s interpreter.

``python interop_ref.py MANIFEST OUTDIR`` imports the reference binding (its
import name is also ``tet``), then:

* reads every ``forward`` file (written by our package): the catalog summary, the
  ``Dataset`` record of each dataset, ``read_numpy`` of each selection (saved as
  ``.npy`` files under OUTDIR) and a ``max`` query of each dataset;
* writes every ``reverse`` file with the reference writer, session by session, from
  the arrays in the manifest's ``.npz``, and dumps the reference's own summary of it.

Every error is caught and recorded with its text, so the parent can tell a
reference limitation from a mismatch.  Results go to ``OUTDIR/results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import tet


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _read(f: Any, name: str, selection: Any, out: Path, key: str) -> dict[str, Any]:
    try:
        arr = f.read_numpy(name) if selection is None else f.read_numpy(name, selection)
    except Exception as exc:
        return {"error": _error(exc)}
    np.save(out / f"{key}.npy", np.ascontiguousarray(arr))
    return {"npy": f"{key}.npy"}


def _open(path: str) -> tuple[Any, dict[str, Any]]:
    rec: dict[str, Any] = {"file": path}
    try:
        f = tet.open(path)
        rec["names"] = list(f.datasets())
        rec["summary"] = f.summary()
    except Exception as exc:
        rec["open_error"] = _error(exc)
        return None, rec
    return f, rec


def read_forward(case: dict[str, Any], index: int, out: Path) -> dict[str, Any]:
    f, rec = _open(case["file"])
    if f is None:
        return rec
    rec["datasets"] = []
    for j, ds in enumerate(case["datasets"]):
        name = ds["name"]
        item: dict[str, Any] = {"name": name}
        try:
            info = f.dataset(name)
            item["dataset"] = {
                "name": info.name,
                "dtype": int(info.dtype),
                "shape": [int(n) for n in info.shape],
                "chunk_shape": [int(n) for n in info.chunk_shape],
                "dim_names": list(info.dim_names) if info.dim_names else None,
            }
        except Exception as exc:
            item["dataset_error"] = _error(exc)
        item["reads"] = [
            _read(f, name, sel, out, f"f{index}_d{j}_s{k}")
            for k, sel in enumerate(ds["selections"])
        ]
        try:  # the query engine views raw tiles in place: this checks their alignment too
            item["max"] = f.query({"dataset": name, "max": []})["execution"]["operation_max"]
        except BaseException as exc:  # a Rust panic is a BaseException: record it too
            if isinstance(exc, KeyboardInterrupt):
                raise
            item["max_error"] = _error(exc)
        rec["datasets"].append(item)
    return rec


def _write_one(writer: Any, ds: dict[str, Any], arrays: Any) -> None:
    writer.write_dataset(
        ds["name"],
        arrays[ds["array"]],
        chunk_shape=ds.get("chunk_shape"),
        attrs=ds.get("attrs"),
        dim_names=ds.get("dim_names"),
        coords=ds.get("coords"),
    )


def write_reverse(case: dict[str, Any], arrays: Any) -> dict[str, Any]:
    path = case["file"]
    sessions = []
    for session in case["sessions"]:
        done: dict[str, Any] = {"datasets": []}
        sessions.append(done)
        try:
            if session["mode"] == "write_dataset":
                (ds,) = session["datasets"]
                op, source = session["history"][0] if session["history"] else (None, None)
                try:
                    tet.write_dataset(
                        path, ds["name"], arrays[ds["array"]],
                        chunk_shape=ds.get("chunk_shape"), attrs=ds.get("attrs"),
                        dim_names=ds.get("dim_names"), coords=ds.get("coords"),
                        history_op=op, history_source=source,
                    )
                    done["datasets"].append({"name": ds["name"]})
                except Exception as exc:
                    done["datasets"].append({"name": ds["name"], "error": _error(exc)})
                continue
            if session["mode"] == "create":
                writer = tet.TetWriter.create(path)
            else:
                writer = tet.TetWriter.open_append(path)
            for op, source in session["history"]:
                writer.push_history_event(op, source)
            for ds in session["datasets"]:
                try:
                    _write_one(writer, ds, arrays)
                    done["datasets"].append({"name": ds["name"]})
                except Exception as exc:
                    done["datasets"].append({"name": ds["name"], "error": _error(exc)})
            writer.commit()
        except Exception as exc:
            done["error"] = _error(exc)
    _, rec = _open(path)
    rec["sessions"] = sessions
    return rec


def main() -> None:
    manifest_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = json.loads(manifest_path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    with np.load(manifest["arrays"]) as arrays:
        results = {
            "version": getattr(tet, "__version__", "?"),
            "forward": [read_forward(c, i, out_dir) for i, c in enumerate(manifest["forward"])],
            "reverse": [write_reverse(c, arrays) for c in manifest["reverse"]],
        }
    (out_dir / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
