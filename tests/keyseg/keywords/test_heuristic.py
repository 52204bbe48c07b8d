"""The offline keyword heuristic on small, realistic records written inline."""

from __future__ import annotations

import pytest

from keyseg.keywords.grounding import check_keyword, keywords_agree
from keyseg.keywords.heuristic import HEURISTIC_LIMITS, heuristic_keyword

# (query, outputs, expected keyword): ReasonSeg-style kitchen and street scenes and
# the demo's shape explanations.
RECORDS = [
    (
        "When eating a bowl of soup, what kitchen tool would most likely be used to scoop and consume the soup?",
        "When eating a bowl of soup, a spoon would most likely be used to scoop and consume the soup. In the "
        "image, there is a spoon resting in the bowl of soup, which is placed on a dining table. The spoon is "
        "a convenient and common tool for eating soup.",
        "spoon",
    ),
    (
        "What could I use to cut the bread on the counter?",
        "A knife is lying next to the cutting board; knives like this one are used to slice bread.",
        "knife",
    ),
    (
        "Which appliance in the kitchen keeps food cold?",
        "The refrigerator in the corner keeps food cold. The refrigerator is white and has two doors.",
        "refrigerator",
    ),
    (
        "What part of the car in the picture is used by the driver to control the direction of the vehicle?",
        "The part of the car used by the driver to control the direction of the vehicle is the steering wheel, "
        "which is located in front of the driver. By turning the steering wheel, the driver can adjust the "
        "car's direction.",
        "steering wheel",
    ),
    (
        "In order to ensure traffic safety, what in the picture tells vehicles when to stop?",
        "In the image, there are two traffic lights at the intersection. These traffic lights tell vehicles "
        "when to stop, proceed or wait.",
        "traffic light",
    ),
    (
        "In many countries cars must display a unique number. Where is it shown on the car in the picture?",
        "The number is displayed on the license plate, which is attached to the rear of the car. The license "
        "plate is usually placed at the front and the back of a vehicle.",
        "license plate",
    ),
    (
        "Where could a tired pedestrian sit down?",
        "In the image, there is a long wooden bench on the sidewalk. The bench offers a place to rest.",
        "bench",
    ),
    (
        "Which shape has exactly three corners? Please segment it.",
        "The red triangle on the left is the answer, because it has exactly three corners.",
        "triangle",
    ),
    (
        "Which shape in this picture has four equal sides and four right angles? Please segment it.",
        "The small orange square at the top left is the answer, because it has four equal sides and four "
        "right angles.",
        "square",
    ),
    (
        "Please segment every shape in this picture that has five sharp points.",
        "The two blue stars are the answer, because each of them has five sharp points.",
        "star",
    ),
    (
        "the small yellow circle",
        "The small yellow circle at the top is the shape being referred to: it is the only small yellow "
        "circle in the picture.",
        "circle",
    ),
]


@pytest.mark.parametrize(("query", "outputs", "expected"), RECORDS)
def test_heuristic_finds_the_target(query, outputs, expected):
    keyword, reason = heuristic_keyword(query, outputs)
    assert keyword is not None, reason
    assert keywords_agree(keyword, expected), (keyword, reason)
    assert check_keyword(keyword, query, outputs).ok
    assert f"'{keyword}'" in reason


def test_heuristic_drops_colour_and_size_adjectives():
    keyword, _ = heuristic_keyword(*RECORDS[7][:2])
    assert keyword == "triangle"
    keyword, _ = heuristic_keyword(*RECORDS[9][:2])
    assert keyword in ("star", "stars")


def test_heuristic_prefers_the_compound_that_names_the_object():
    assert heuristic_keyword(*RECORDS[3][:2])[0] == "steering wheel"
    # written as in the text: the answer only has the plural
    assert heuristic_keyword(*RECORDS[4][:2])[0] == "traffic lights"


@pytest.mark.parametrize(
    ("query", "outputs"),
    [("Is it?", "Yes."), ("", ""), ("Is it the one?", "It is, and they are."), ("Which?", "The left one, probably.")],
)
def test_heuristic_returns_none_without_a_noun(query, outputs):
    keyword, reason = heuristic_keyword(query, outputs)
    assert keyword is None
    assert reason


def test_heuristic_falls_back_to_the_query_for_bare_answers():
    keyword, reason = heuristic_keyword("Please segment the dog on the sofa.", "Sure, [SEG].")
    assert keyword in ("dog", "sofa")
    assert "query" in reason
    assert check_keyword(keyword, "Please segment the dog on the sofa.", "Sure, [SEG].").ok


def test_heuristic_is_deterministic():
    query, outputs, _ = RECORDS[0]
    assert heuristic_keyword(query, outputs) == heuristic_keyword(query, outputs)


def test_limits_are_documented():
    assert "no model" in HEURISTIC_LIMITS and "tagger" in HEURISTIC_LIMITS
    assert "wrong object" in HEURISTIC_LIMITS
