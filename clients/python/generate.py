"""Generates the Python stubs of octet.v1 from server/proto with grpcio-tools.

    python clients/python/generate.py [OUT_DIR]

Writes octet/v1/*_pb2.py and *_pb2_grpc.py under OUT_DIR (default:
clients/python/generated, which git ignores). Nothing generated is committed: the
proto is the single source of truth.
"""

import os
import sys

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "server", "proto"))
FILES = ["common", "collections", "points", "search", "admin"]


def generate(out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    grpc_include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ] + [os.path.join(PROTO_ROOT, "octet", "v1", f"{f}.proto") for f in FILES]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    # Make the generated folders importable packages.
    for pkg in ("octet", os.path.join("octet", "v1")):
        open(os.path.join(out_dir, pkg, "__init__.py"), "a").close()
    return out_dir


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "generated"))
