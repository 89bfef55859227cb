#!/usr/bin/env python3
"""Writes the real sample's texts and labels with one extra row per labelled photo that has no
text row: the row has no title or description, only the product id, image id and label, so
`prodcat data import` keeps it for the image branch alone.

    benchmarks/quality/photo-rows.py [--aside] SAMPLE_DIR OUT_DIR
    prodcat data import --texts OUT_DIR/X.csv --labels OUT_DIR/Y.csv \
        --images SAMPLE_DIR/images/image_train

SAMPLE_DIR holds text/X_train_sample.csv, text/Y_train_sample.csv and images/images_index.csv
(the original row index, image id, product id and label of every photo).

With --aside, the products kept aside (a fixed quarter of the text rows, chosen by a hash of the
product id, so the same products in every run and every version) go to OUT_DIR/aside-X.csv and
aside-Y.csv instead, for `prodcat evaluate`; nothing of them (text or photo) is in X.csv.
"""
import csv
import hashlib
import os
import sys


def kept_aside(product_id: str) -> bool:
    """A fixed quarter of the products, independent of the file's order and of the run."""
    digest = hashlib.sha256(f"prodcat-aside:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 4 == 0


def main() -> None:
    arguments = sys.argv[1:]
    aside = "--aside" in arguments
    arguments = [a for a in arguments if a != "--aside"]
    if len(arguments) != 2:
        sys.exit(__doc__)
    sample, out = arguments
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(sample, "text", "X_train_sample.csv"), newline="") as f:
        texts = list(csv.reader(f))
    with open(os.path.join(sample, "text", "Y_train_sample.csv"), newline="") as f:
        labels = list(csv.reader(f))
    header, rows = texts[0], texts[1:]
    aside_rows, aside_labels = [], []
    if aside:
        aside_indices = {row[0] for row in rows if kept_aside(row[3])}
        aside_rows = [row for row in rows if row[0] in aside_indices]
        aside_labels = [row for row in labels[1:] if row[0] in aside_indices]
        rows = [row for row in rows if row[0] not in aside_indices]
        labels = [labels[0]] + [row for row in labels[1:] if row[0] not in aside_indices]
    # Photos of the text sample's products (kept aside or not) never become photo-only rows.
    indices = {row[0] for row in rows + aside_rows}
    products = {row[3] for row in rows + aside_rows}
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
    if aside:
        with open(os.path.join(out, "aside-X.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(aside_rows)
        with open(os.path.join(out, "aside-Y.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(labels[0])
            writer.writerows(aside_labels)
    print(
        f"{len(rows)} rows with text, {len(extra_texts)} photo-only rows"
        + (f", {len(aside_rows)} products kept aside" if aside else "")
        + f" -> {out}"
    )


if __name__ == "__main__":
    main()
