"""Generate the Python code of the public contract into gateway/pb/.

The generated modules are committed; tests/proto/test_generated.py regenerates them into a
temporary folder and fails if anything differs, so they are never edited by hand.

    python proto/generate.py [OUT_DIR]
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parent
PROTO_FILES = ("creditgate/v1/creditgate.proto",)
DEFAULT_OUT = PROTO_ROOT.parent / "gateway" / "pb"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with_dirs = out_dir / "_protoc"
    with_dirs.mkdir(exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={with_dirs}",
        f"--pyi_out={with_dirs}",
        f"--grpc_python_out={with_dirs}",
        *(str(PROTO_ROOT / name) for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for produced in sorted(with_dirs.rglob("*.py*")):
        text = produced.read_text()
        # protoc names sibling modules by their proto package path (creditgate.v1); inside
        # gateway.pb they are siblings, so the import is made relative.
        text = text.replace("from creditgate.v1 import", "from . import")
        target = out_dir / produced.name
        target.write_text(text)
        written.append(target)
    for leftover in sorted(with_dirs.rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    with_dirs.rmdir()
    return written


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path)
