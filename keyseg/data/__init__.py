"""Model-ready KeySeg samples from WebDataset shards.

    transforms    SAM (longest side L, padded) and CLIP (shortest side S, centre crop) inputs
    conversation  the reference's conversation text: templates, [SEG] answers, KeySeg's [KEY]
    samples       one shard sample -> tensors, masks and texts (train: random queries)
    loader        shard URLs (index, braces, http, s3, pipe), train/eval streams, collate
"""

from keyseg.data.conversation import ConversationConfig, eval_query
from keyseg.data.loader import (
    KeySegLoader,
    KeySegPipeline,
    LoaderStats,
    SkippedSample,
    collate,
    make_eval_pipeline,
    make_loader,
    make_train_pipeline,
    register_url_schemes,
    resolve_shards,
)
from keyseg.data.samples import CorruptSampleError, SampleConfig, SampleDecoder, decode_sample
from keyseg.data.transforms import ClipInput, SamInput, clip_input, decode_rgb, sam_input

__all__ = [
    "ClipInput",
    "ConversationConfig",
    "CorruptSampleError",
    "KeySegLoader",
    "KeySegPipeline",
    "LoaderStats",
    "SamInput",
    "SampleConfig",
    "SampleDecoder",
    "SkippedSample",
    "clip_input",
    "collate",
    "decode_rgb",
    "decode_sample",
    "eval_query",
    "make_eval_pipeline",
    "make_loader",
    "make_train_pipeline",
    "register_url_schemes",
    "resolve_shards",
    "sam_input",
]
