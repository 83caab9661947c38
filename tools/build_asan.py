"""Build the kernels with AddressSanitizer and UndefinedBehaviorSanitizer into a
separate directory (default build/asan), never over the tree's tet/_native*.so.

The result is ``<dir>/_native.so``; point ``TET_NATIVE`` at it and preload the ASan
runtime to use it (``make asan`` does both):

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) TET_NATIVE=build/asan/_native.so python …
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined", "-g"]


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO / "build" / "asan"
    out = out if out.is_absolute() else REPO / out
    sys.path.insert(0, str(REPO))
    from build_ffi import make_builder

    work = out / "cffi"
    shutil.rmtree(work, ignore_errors=True)
    ffi = make_builder(absolute=True, extra_compile=[*SANITIZE, "-O1"], extra_link=SANITIZE)
    built = Path(ffi.compile(tmpdir=str(work)))
    target = out / "_native.so"
    shutil.copyfile(built, target)
    print(f"built {target.relative_to(REPO) if target.is_relative_to(REPO) else target} "
          f"({' '.join(SANITIZE)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
