"""Semantic-segmentation training queries follow the reference's drawing rules."""

import random
from collections import Counter

from keyseg.data.conversation import ANSWERS, SHORT_QUESTIONS, conversation, with_image_markers
from keyseg.data.semantic_queries import annotation_queries, label_map_queries, part_name
from keyseg.sources.semantic import PartCategory

CLASSES = ["wall", "building", "sky", "floor", "tree", "Sky"]


def test_label_map_queries_draw_distinct_present_classes_with_reference_templates():
    rng = random.Random(0)
    for _ in range(200):
        queries = label_map_queries(CLASSES, [0, 2, 3, 4], rng)
        assert len(queries) == 3 and len({q.label for q in queries}) == 3
        for query in queries:
            assert query.label in (0, 2, 3, 4) and CLASSES[query.label] == query.name
            assert query.question in {t.format(class_name=query.name.lower()) for t in SHORT_QUESTIONS}
            answers = {with_image_markers(conversation(query.question, answer)) for answer in ANSWERS}
            assert query.conversation in answers and "[KEY]" not in query.conversation


def test_fewer_classes_than_the_draw_gives_all_of_them():
    queries = label_map_queries(CLASSES, [1], random.Random(0))
    assert [q.label for q in queries] == [1]
    assert label_map_queries(CLASSES, [], random.Random(0)) == []


def test_a_repeated_class_name_takes_the_first_label_as_the_reference_does():
    # The reference finds a drawn name's label with list.index (sem_seg_dataset.py:290).
    names = ["sky", "tree", "sky"]
    queries = label_map_queries(names, [2], random.Random(0))
    assert [(q.name, q.label) for q in queries] == [("sky", 0)]


def test_part_categories_are_phrased_both_ways_about_equally():
    rng = random.Random(1)
    tail = PartCategory("dog", "tail")
    counts = Counter(part_name(tail, rng) for _ in range(2000))
    assert set(counts) == {"dog tail", "the tail of the dog"}
    assert 900 < counts["dog tail"] < 1100
    assert part_name(PartCategory("dog"), rng) == "dog"


def test_annotation_queries_point_at_distinct_annotations():
    categories = [PartCategory("dog", "tail"), PartCategory("dog"), PartCategory("car", "wheel"), PartCategory("cat")]
    rng = random.Random(2)
    for _ in range(100):
        queries = annotation_queries(categories, rng)
        assert len({q.annotation for q in queries}) == 3
        for query in queries:
            category = categories[query.annotation]
            assert query.name in {category.object, f"{category.object} {category.part}",
                                  f"the {category.part} of the {category.object}"}
            assert query.label is None
