#!/usr/bin/env python3
"""The largest difference between two safetensors checkpoints of the same network.

    python3 scripts/compare_checkpoints.py A.safetensors B.safetensors [--tolerance 1e-5]

Reads the format directly (8-byte header length, JSON header, raw little-endian data), so it
needs no package beyond the standard library: the GPU machines run it without numpy or
safetensors. Prints the largest absolute difference and the tensor holding it; exits 1 when the
tensors differ in names, shapes or dtypes, or by more than the tolerance.
"""
import argparse
import array
import json
import struct
import sys

FORMATS = {"F32": "f", "F64": "d"}


def read(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in FORMATS:
            sys.exit(f"{path}: tensor {name} has dtype {info['dtype']}; only F32 and F64 are compared")
        start, end = info["data_offsets"]
        values = array.array(FORMATS[info["dtype"]])
        values.frombytes(data[start:end])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = (info["dtype"], info["shape"], values)
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    a, b = read(args.a), read(args.b)
    if sorted(a) != sorted(b):
        sys.exit(f"the checkpoints hold different tensors: {sorted(set(a) ^ set(b))}")
    worst, where = 0.0, None
    for name in sorted(a):
        (dtype_a, shape_a, x), (dtype_b, shape_b, y) = a[name], b[name]
        if (dtype_a, shape_a) != (dtype_b, shape_b):
            sys.exit(f"{name}: {dtype_a} {shape_a} against {dtype_b} {shape_b}")
        for u, v in zip(x, y):
            if abs(u - v) > worst or u != u or v != v:
                worst, where = (abs(u - v) if u == u and v == v else float("inf")), name
    print(f"largest difference {worst:.3e} ({where or 'no tensor differs'}); {len(a)} tensors")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
