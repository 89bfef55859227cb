"""The reference service of the service benchmark: FastAPI + scikit-learn serving the same text
pipeline as prodcat's text branch, so both can be loaded the same way side by side.

The pipeline is the one the text-model benchmark already builds
(crates/prodcat-text-model/bench/compare_sklearn.py, imported from there so the two can not
drift apart): TF-IDF word 1-2-grams (120,000 features, min_df 2, max_df 0.9, sublinear tf,
accents stripped) united with TF-IDF char_wb 3-5-grams (160,000 features, sublinear tf), then
LinearSVC(C=0.5). The text is the designation and the description, each with HTML entities
decoded and tags removed, space-joined, as prodcat does.

    python reference_server.py fit --texts X.csv --labels Y.csv --out model.pkl
    PRODCAT_REF_MODEL=model.pkl PRODCAT_REF_TOKEN=... \
        uvicorn reference_server:app --host 127.0.0.1 --port 8090 --workers 2

POST /v1/predict takes {"designation": "...", "description": "..."} and answers the category
code and the five most probable categories (softmax of the SVM scores). When PRODCAT_REF_TOKEN
is set, requests must carry `Authorization: Bearer <token>` (a constant-time comparison, so the
reference also checks a credential on every request, as prodcat does). GET /readyz answers 200.
"""

import argparse
import csv
import hmac
import html
import os
import pickle
import re
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "crates" / "prodcat-text-model" / "bench"))

TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ufeff\u200b]+")


def decode_entities(text):
    if "&" not in text:
        return text
    once = html.unescape(text)
    if "&" in once and once != text:
        return html.unescape(once)
    return once


def strip_tags(text):
    if "<" not in text:
        return text
    return TAG.sub(" ", text)


def normalize_text(raw):
    """Entities decoded (twice when double-encoded), tags removed, NFC, whitespace collapsed."""
    text = strip_tags(decode_entities(raw or ""))
    if "&" in text:
        text = strip_tags(decode_entities(text))
    return SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def product_text(designation, description):
    return " ".join(part for part in (normalize_text(designation), normalize_text(description)) if part)


def read_catalogue(texts_path, labels_path):
    """Reads the challenge layout: X (index, designation, description, ...) and Y (index, code)."""
    csv.field_size_limit(1 << 30)
    with open(labels_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        code_column = header.index("prdtypecode")
        labels = {row[0]: int(row[code_column]) for row in reader}
    texts, codes = [], []
    with open(texts_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        designation_column = header.index("designation")
        description_column = header.index("description")
        for row in reader:
            texts.append(product_text(row[designation_column], row[description_column]))
            codes.append(labels[row[0]])
    return texts, np.array(codes)


def fit(args):
    from compare_sklearn import make_pipeline

    texts, codes = read_catalogue(args.texts, args.labels)
    started = time.perf_counter()
    pipeline = make_pipeline()
    pipeline.fit(texts, codes)
    print(
        f"reference: fitted on {len(texts)} products in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    with open(args.out, "wb") as handle:
        pickle.dump(pipeline, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_model():
    path = os.environ.get("PRODCAT_REF_MODEL")
    if not path:
        raise RuntimeError("set PRODCAT_REF_MODEL to a model pickled by `reference_server.py fit`")
    with open(path, "rb") as handle:
        return pickle.load(handle)


def top_categories(pipeline, text, count=5):
    scores = pipeline.decision_function([text])[0]
    shifted = np.exp(scores - scores.max())
    probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities)[:count]
    classes = pipeline.classes_
    return [(int(classes[i]), float(probabilities[i])) for i in order]


def create_app():
    from fastapi import FastAPI, Header, HTTPException
    from pydantic import BaseModel

    pipeline = load_model()
    token = os.environ.get("PRODCAT_REF_TOKEN", "")
    expected = f"Bearer {token}".encode()
    app = FastAPI(title="prodcat reference (FastAPI + scikit-learn)")

    class PredictRequest(BaseModel):
        designation: str = ""
        description: str = ""
        image: str | None = None

    def check(authorization):
        if token and not hmac.compare_digest((authorization or "").encode(), expected):
            raise HTTPException(status_code=401, detail="invalid token")

    def classify(request):
        started = time.perf_counter()
        text = product_text(request.designation, request.description)
        if not text:
            raise HTTPException(status_code=422, detail="nothing to classify")
        top = top_categories(pipeline, text)
        return {
            "categoryCode": top[0][0],
            "confidence": top[0][1],
            "top": [{"categoryCode": code, "probability": p} for code, p in top],
            "elapsedMicroseconds": int((time.perf_counter() - started) * 1e6),
        }

    # The model call takes a few hundred microseconds of CPU and holds the GIL; on a worker
    # process per core an `async def` handler (run on the event loop) is FastAPI's faster
    # choice for it. PRODCAT_REF_HANDLER=sync runs it on the thread pool instead.
    if os.environ.get("PRODCAT_REF_HANDLER", "async") == "sync":

        @app.post("/v1/predict")
        def predict(request: PredictRequest, authorization: str | None = Header(default=None)):
            check(authorization)
            return classify(request)

    else:

        @app.post("/v1/predict")
        async def predict(request: PredictRequest, authorization: str | None = Header(default=None)):
            check(authorization)
            return classify(request)

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


def __getattr__(name):
    # `uvicorn reference_server:app` loads the model in each worker process only.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fit", help="fit the pipeline on a catalogue and pickle it")
    p.add_argument("--texts", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
