"""The dataset card (README.md) of a shard set, so that Hugging Face `datasets` loads the
folder as it stands: `datasets.load_dataset(FOLDER, "reasonseg")` gives that source's
splits, `datasets.load_dataset(FOLDER)` every source (config "all", splits merged by name).

Its YAML front matter lists one config per source with the tar files of each split
(`configs: data_files`), and the features of every config (`dataset_info`): without them
the webdataset builder infers the schema from the first samples and a mix of sources
fails ("Couldn't cast array of type string to null"). Written with index.json by
`keyseg.shards.index.write_shard_set`, never edited by hand.
"""

from __future__ import annotations

import re

from keyseg.shards.index import URL_OR_COMMAND, split_parts, split_sample_count
from keyseg.shards.samples import hf_features

ALL_CONFIG = "all"
# What `datasets` accepts: split names (datasets.naming._split_re), config names (no
# characters that are invalid in a Windows path) and data file paths (taken as glob patterns).
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
_BAD_CONFIG_CHARS = set('<>:/\\|?*')
_GLOB_CHARS = set("*?[]{}")


def _plain_relative(path: str) -> bool:
    """A file inside the folder, taken literally by `datasets` (no scheme, glob or ..)."""
    return (not URL_OR_COMMAND.match(path) and not path.startswith(("/", "\\")) and not _GLOB_CHARS & set(path)
            and ".." not in path.replace("\\", "/").split("/"))


def card_configs(index: dict) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """config -> split -> tar paths (relative to the folder), and the "source:split" names
    left out of the card (a name or path `datasets` cannot take, or no shards)."""
    per_source: dict[str, dict[str, list[str]]] = {}
    left_out = []
    for name, split in index["splits"].items():
        source, part = split_parts(index, name)
        paths = [entry["path"] for entry in split["shards"]]
        usable = (paths and _SPLIT_NAME.match(part) and source != ALL_CONFIG
                  and not _BAD_CONFIG_CHARS & set(source) and source.strip() == source and source
                  and all(_plain_relative(path) for path in paths))
        if not usable:
            left_out.append(name)
            continue
        per_source.setdefault(source, {}).setdefault(part, []).extend(paths)
    configs = {}
    if per_source:
        merged: dict[str, list[str]] = {}
        for splits in per_source.values():
            for part, paths in splits.items():
                merged.setdefault(part, []).extend(paths)
        configs[ALL_CONFIG] = merged
    configs.update(per_source)
    return configs, left_out


def card_metadata(configs: dict[str, dict[str, list[str]]]) -> str:
    """The YAML front matter (without the --- lines)."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        task_categories=["image-segmentation"], tags=["keyseg", "webdataset"],
        configs=[{"config_name": name, **({"default": True} if name == ALL_CONFIG else {}),
                  "data_files": [{"split": part, "path": paths} for part, paths in splits.items()]}
                 for name, splits in configs.items()])
    DatasetInfosDict({name: DatasetInfo(features=hf_features()) for name in configs}).to_dataset_card_data(data)
    return data.to_yaml().rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def dataset_card(index: dict) -> str:
    """README.md of a shard set: front matter for `datasets`, then how to load and what is in it."""
    configs, left_out = card_configs(index)
    example = next((name for name in configs if name != ALL_CONFIG), ALL_CONFIG)
    parts = list(configs.get(ALL_CONFIG, {}))
    first_split = "val" if "val" in parts or not parts else parts[0]
    lines = [
        "# keyseg shard set", "",
        "WebDataset shards written by `keyseg shard`: one sample per image, `jpg` (the original file) and",
        "`json` (`id`, `source`, `split`, `image`, `width`, `height`, `targets`, each with its texts, keyword,",
        "explanatory answer and target/ignore masks as COCO RLE, and `conversations`: null, or in a",
        "visual-question-answering sample without targets its turns `{from, value}`). `index.json` lists every",
        "shard with its sample count, size and sha256; `keyseg shards verify` checks them.", "",
        "Load with Hugging Face `datasets` (offline, from this folder):", "",
        "```python",
        "import datasets",
        f'one_source = datasets.load_dataset("path/to/this/folder", "{example}")',
        'every_source = datasets.load_dataset("path/to/this/folder")  # config "all": splits merged by name',
        "",
        "from keyseg.shards.samples import decode_mask  # 0 background, 1 target, 255 ignore",
        f'mask = decode_mask(every_source["{first_split}"][0]["json"]["targets"][0]["mask"])',
        "```", "",
        "| config | split | images | shards |", "|---|---|---:|---:|",
    ]
    for name in index["splits"]:
        if name in left_out:
            continue
        source, part = split_parts(index, name)
        samples = split_sample_count(index, name)
        lines.append(f"| {_cell(source)} | {_cell(part)} | {'-' if samples is None else samples} "
                     f"| {len(index['splits'][name]['shards'])} |")
    if left_out:
        lines += ["", "Not in a config (a name or path `datasets` cannot take, or no shards): "
                  + ", ".join(f"`{_cell(name)}`" for name in left_out) + "."]
    front = f"---\n{card_metadata(configs)}---\n\n" if configs else ""
    return front + "\n".join(lines) + "\n"
