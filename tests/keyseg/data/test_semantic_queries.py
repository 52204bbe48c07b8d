"""Semantic-segmentation training queries follow the reference's drawing rules."""

import random

from keyseg.data.conversation import ANSWERS, SHORT_QUESTIONS, conversation, with_image_markers
from keyseg.data.semantic_queries import draw_targets, semantic_train_query
from keyseg.sources.semantic import label_map_targets


def test_a_query_uses_the_reference_templates_lower_cased_and_no_keyword():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        query = semantic_train_query("Traffic Light", rng)
        assert query.question in {t.format(class_name="traffic light") for t in SHORT_QUESTIONS}
        assert query.conversation in {with_image_markers(conversation(query.question, a)) for a in ANSWERS}
        assert query.keyword is None and "[KEY]" not in query.conversation
        seen.add(query.conversation)
    assert len(seen) == len(SHORT_QUESTIONS) * len(ANSWERS)  # every pairing is reachable


def test_draws_are_distinct_and_capped():
    rng = random.Random(0)
    for _ in range(100):
        drawn = draw_targets(5, rng)
        assert len(drawn) == 3 == len(set(drawn)) and all(0 <= i < 5 for i in drawn)
    assert draw_targets(2, rng) == [0, 1] and draw_targets(0, rng) == []


def test_a_repeated_class_name_takes_the_first_label_as_the_reference_does():
    # The reference finds a drawn name's label with list.index (sem_seg_dataset.py:290).
    names = ["sky", "tree", "sky", "road"]
    assert label_map_targets(names, [1, 2, 3]) == [("tree", 1), ("sky", 0), ("road", 3)]


def test_the_decoder_asks_about_distinct_classes_of_a_semantic_sample():
    import numpy as np
    from loader_rank_worker import make_jpeg

    from keyseg.data.samples import SampleConfig, SampleDecoder
    from keyseg.shards.samples import build_sample_json, sample_json_bytes

    width, height = 96, 64
    classes = [("wall", 0), ("sky", 2), ("tree", 4), ("road", 6)]
    masks = []
    for number, _ in enumerate(classes):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, number * 20:(number + 1) * 20] = 1
        masks.append(mask)
    phrases = [["wall"], ["sky"], ["tree"], ["the wheel of the car", "car wheel"]]
    record = {"id": "ade-0", "source": "ade20k", "split": "train", "image": "ade-0.jpg", "width": width,
              "height": height, "targets": [{"texts": texts, "is_sentence": False} for texts in phrases]}
    raw = {"__key__": "ade-0", "jpg": make_jpeg(width, height, 0),
           "json": sample_json_bytes(build_sample_json(record, masks, [None] * len(masks)))}
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=32, num_queries=3))
    seen = set()
    for seed in range(40):
        sample = decoder(raw, random.Random(seed))
        drawn = sample["target_indices"]
        assert len(drawn) == 3 == len(set(drawn))
        for n, (target, text) in enumerate(zip(drawn, sample["text_indices"])):
            name = phrases[target][text]
            assert sample["texts"][n] == name and sample["keywords"][n] is None
            assert sample["questions"][n] in {t.format(class_name=name.lower()) for t in SHORT_QUESTIONS}
            assert np.array_equal(sample["masks"][n].numpy(), masks[target])
            seen.add(name)
    assert {"the wheel of the car", "car wheel"} <= seen
