#!/usr/bin/env python3
"""Writes the real sample's texts and labels with one extra row per labelled photo that has no
text row: the row has no title or description, only the product id, image id and label, so
`prodcat data import` keeps it for the image branch alone.

    benchmarks/quality/photo-rows.py SAMPLE_DIR OUT_DIR
    prodcat data import --texts OUT_DIR/X.csv --labels OUT_DIR/Y.csv \
        --images SAMPLE_DIR/images/image_train

SAMPLE_DIR holds text/X_train_sample.csv, text/Y_train_sample.csv and images/images_index.csv
(the original row index, image id, product id and label of every photo).
"""
import csv
import os
import sys


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sample, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(sample, "text", "X_train_sample.csv"), newline="") as f:
        texts = list(csv.reader(f))
    with open(os.path.join(sample, "text", "Y_train_sample.csv"), newline="") as f:
        labels = list(csv.reader(f))
    header, rows = texts[0], texts[1:]
    indices = {row[0] for row in rows}
    products = {row[3] for row in rows}
    extra_texts, extra_labels = [], []
    with open(os.path.join(sample, "images", "images_index.csv"), newline="") as f:
        for photo in csv.DictReader(f):
            if photo["split"] != "train":
                continue
            if photo["index"] in indices or photo["productid"] in products:
                continue
            indices.add(photo["index"])
            products.add(photo["productid"])
            extra_texts.append([photo["index"], "", "", photo["productid"], photo["imageid"]])
            extra_labels.append([photo["index"], photo["prdtypecode"]])
    with open(os.path.join(out, "X.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows + extra_texts)
    with open(os.path.join(out, "Y.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows(labels + extra_labels)
    print(f"{len(rows)} rows with text, {len(extra_texts)} photo-only rows -> {out}")


if __name__ == "__main__":
    main()
