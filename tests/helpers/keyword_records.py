"""Realistic ReasonSeg-style explanatory records for the keyword tests, and a responder
for the loopback OpenAI server that answers them like a sensible model would."""

from __future__ import annotations

import json

# The API key the tests pass to the server: it must never appear in an output or a log.
SECRET = "sk-test-5ecret-value-that-must-not-leak"

RECORDS = [
    ("When eating soup, what kitchen tool would you use to scoop it?",
     "A spoon would be used to scoop the soup. In the image a spoon rests in the bowl.", "spoon"),
    ("What in this street scene tells drivers when to stop?",
     "The traffic light at the corner tells drivers when to stop and go.", "traffic light"),
    ("Which object could keep you dry in the rain?",
     "The umbrella held by the woman would keep you dry in the rain.", "umbrella"),
    ("What would you sit on while working at the desk?",
     "The office chair in front of the desk is where you would sit.", "chair"),
    ("Where would you put dirty dishes to wash them?",
     "The sink below the window is where dirty dishes are washed.", "sink"),
    ("What can be used to cut the bread on the table?",
     "The knife next to the loaf can be used to cut the bread.", "knife"),
    ("Which shape has exactly three corners? Please segment it.",
     "The red triangle on the left is the answer, because it has exactly three corners.", "triangle"),
    ("What could roll down a slope like a ball?",
     "The blue circle at the top could roll like a ball, since it is round.", "circle"),
    ("What shows the time in this room?",
     "The clock on the wall shows the time.", "clock"),
    ("Which animal in the picture is known for barking?",
     "The dog lying on the sofa is known for barking.", "dog"),
    ("What would you use to read the news in the morning?",
     "The newspaper on the breakfast table is what you would read in the morning.", "newspaper"),
    ("Where can the car be parked safely?",
     "The garage behind the house is where the car can be parked safely.", "garage"),
]


def explanatory_json() -> list[dict]:
    return [{"image": f"img{index:03d}.jpg", "json": f"img{index:03d}.json", "query": query, "outputs": outputs}
            for index, (query, outputs, _) in enumerate(RECORDS)]


def question_of(body: dict) -> str:
    """The query of a request built by keyseg's prompt ("Question: ...")."""
    for message in body["messages"]:
        content = message.get("content") or ""
        if content.startswith("Question: "):
            return content.splitlines()[0][len("Question: "):]
    raise AssertionError("no question in the request")


def keyword_responder(overrides: dict | None = None):
    """Answers each question with its expected keyword (JSON when a schema was asked for)."""
    expected = {query: keyword for query, _, keyword in RECORDS}
    overrides = overrides or {}

    def respond(body: dict) -> str:
        query = question_of(body)
        retried = any("was rejected" in (m.get("content") or "") for m in body["messages"])
        keyword = overrides.get((query, retried), expected.get(query, "thing"))
        if "response_format" in body:
            return json.dumps({"keyword": keyword})
        return f"{keyword}"

    return respond
