"""Write the small demo file that `make run` reads: a few datasets with dim
names, coords and attrs, raw and zstd tiles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tet.writer import TetWriter


def write_demo(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(24 * 6, dtype=np.float32).reshape(24, 6)
    temperature = 270.0 + 10.0 * np.sin(t / 7.0)
    counts = (np.arange(10 * 20 * 3) % 251).astype(np.uint8).reshape(10, 20, 3)
    w = TetWriter.create(path)
    w.push_history_event("demo", "tet.demo")
    w.write_dataset(
        "temperature", temperature.astype(np.float32), chunk_shape=(8, 4),
        attrs={"units": "K", "_FillValue": "-9999"}, dim_names=["hour", "station"],
        coords={"station": ["ams", "ber", "cph", "dub", "edi", "fra"]},
    )
    w.write_dataset("counts", counts, chunk_shape=(4, 8, 3), codec="zstd",
                    dim_names=["y", "x", "band"])
    w.write_dataset("grid/f64", np.linspace(0.0, 1.0, 1000).reshape(10, 100), codec="zstd")
    w.commit()
    return w.path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = write_demo(args[0] if args else "demo.tet")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
