"""reply: the pipeline's sink, run as two services (positive and negative) from this one file.

Reads the review (``text``) and classify's score (``scores``), writes a reply to ``results``
(JSON) and upserts a row of ``review_results`` (../schema.sql) in the message's transaction:
the row is committed only after the reply is uploaded, and a redelivered message updates its
row instead of failing. It yields nothing: the system map gives these services no routes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from slingshot_runtime.typing import ReadFileFn, WriteFileFn

REPLIES = {
    "positive": "Thank you for the kind words{quote}! We are glad you enjoyed it.",
    "negative": "We are sorry it went wrong{quote}: a support ticket is open and we will write to you.",
}
SCHEMA = text((Path(__file__).resolve().parent.parent / "schema.sql").read_text())
UPSERT = text(
    "INSERT INTO review_results (request, verdict, words, finished_at) VALUES (:request, :verdict, :words, :finished_at) "
    "ON CONFLICT (request) DO UPDATE SET verdict = excluded.verdict, words = excluded.words, finished_at = excluded.finished_at"
)


def compose(review: str, score: dict[str, Any]) -> dict[str, str]:
    """The reply to a review, from classify's score: {"score": N, "positive": [...], "negative": [...]}."""
    verdict = "positive" if score["score"] > 0 else "negative"
    words = score.get(verdict) or []
    quote = f" ({', '.join(words)})" if words else ""
    return {"verdict": verdict, "reply": REPLIES[verdict].format(quote=quote), "review": review}


def process(request: int, read_file: ReadFileFn, write_file: WriteFileFn, connection: Connection) -> None:
    with read_file("text", request) as source:
        review = source.read().decode()
    with read_file("scores", request) as source:
        score = json.loads(source.read())
    reply = compose(review, score)
    with write_file("results", request) as target:
        target.write(json.dumps({"request": request, **reply}).encode())
    connection.execute(SCHEMA)  # IF NOT EXISTS: a no-op once the table is there
    row = {"request": request, "verdict": reply["verdict"], "words": len(review.split()), "finished_at": time.time()}
    connection.execute(UPSERT, row)
