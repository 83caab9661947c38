"""Reference child of ``bench_fold.py`` (runs under ``.venv-ref``): reads
{"path", "docs"} on stdin, times each document once with the reference's
``TetFile.query`` and prints a JSON list of seconds (or error texts)."""

from __future__ import annotations

import json
import sys
import time

import tet


def main() -> None:
    spec = json.loads(sys.stdin.read())
    f = tet.open(spec["path"])
    out: list[float | str] = []
    for doc in spec["docs"]:
        try:
            t0 = time.perf_counter()
            f.query(doc)
            out.append(time.perf_counter() - t0)
        except Exception as exc:  # the reference's own failure, reported as text
            out.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
