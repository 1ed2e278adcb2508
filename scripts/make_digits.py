#!/usr/bin/env python3
"""Regenerates data/digits.safetensors: the 1797 8x8 handwritten digits that scikit-learn bundles
(UCI "Optical Recognition of Handwritten Digits", test set; pixel values 0-16).

    pip install scikit-learn && python3 scripts/make_digits.py

Tensors: `images` u8 [1797, 8, 8] and `labels` u8 [1797], in the original order. The safetensors
file is written by hand (an 8-byte header length, a JSON header, the raw bytes) to need nothing
beyond scikit-learn, and atomically (temporary file, then rename).
"""
import json
import os
import struct
import tempfile

from sklearn.datasets import load_digits

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "digits.safetensors")


def main():
    digits = load_digits()
    images = digits.images.astype("uint8")  # values 0..16
    labels = digits.target.astype("uint8")
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    image_bytes, label_bytes = images.tobytes(), labels.tobytes()
    header = {
        "__metadata__": {"source": "sklearn.datasets.load_digits (UCI optdigits), pixel values 0-16"},
        "images": {"dtype": "U8", "shape": list(images.shape), "data_offsets": [0, len(image_bytes)]},
        "labels": {"dtype": "U8", "shape": list(labels.shape),
                   "data_offsets": [len(image_bytes), len(image_bytes) + len(label_bytes)]},
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # align the data to 8 bytes
    out = os.path.normpath(OUT)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + image_bytes + label_bytes)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"wrote {out}: {len(labels)} images, classes {sorted(set(labels.tolist()))}")


if __name__ == "__main__":
    main()
