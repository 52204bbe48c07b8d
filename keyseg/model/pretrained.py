"""The exported model folder: the one module that writes and reads it.

    FOLDER/model.safetensors     every tensor of `KeySegModel.state_dict()`, LoRA merged
    FOLDER/config.json           KeySegConfig fields + "model_type": "keyseg" (AutoConfig reads
                                 it once keyseg is imported; keyseg/hf_config.py)
    FOLDER/tokenizer/            the tokenizer, special tokens included
    FOLDER/README.md             model card: what it is, how to load it, its data and metrics
    FOLDER/train_config.json     the training run's config                  } each when
    FOLDER/data_provenance.json  the shard set and inputs it saw            } known
    FOLDER/export_info.json      checkpoint, tag, step, epoch, best gIoU    }
    FOLDER/eval_metrics.json     `keyseg evaluate`'s metrics.json           }

Every file is written through a temporary file and a rename, with the usual file mode; the
card is generated from the other files (`write_model_card` rewrites it).
Turning a training run's checkpoint into such a folder is training's part
(`keyseg.training.export`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from keyseg.errors import DataError
from keyseg.io import atomic_output_path, atomic_write_json, atomic_write_text, default_file_mode

MODEL_TYPE = "keyseg"  # keyseg.hf_config.MODEL_TYPE, without importing transformers
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
CARD_FILE = "README.md"
TRAIN_CONFIG_FILE = "train_config.json"
PROVENANCE_FILE = "data_provenance.json"
EXPORT_INFO_FILE = "export_info.json"
METRICS_FILE = "eval_metrics.json"


# ---------------------------------------------------------------------------- writing
def save_pretrained(model, tokenizer, folder: str | Path, *, train_config: dict | None = None,
                    data_provenance: dict | None = None, export_info: dict | None = None,
                    eval_metrics: dict | None = None, base_model: str | None = None) -> Path:
    """Write `model` (LoRA already merged) and `tokenizer` as an exported model folder.

    The optional dicts become their own JSON files; one not given is removed from the folder
    (it described the model saved there before). `base_model`: the Hub id the weights
    started from, for the model card."""
    from safetensors.torch import save_file

    from keyseg.model.params import LORA_MARKER

    folder = Path(folder)
    lora = [name for name in model.state_dict() if LORA_MARKER in name]
    if lora:
        raise ValueError(f"merge LoRA before saving (keyseg.model.params.merge_lora): {lora[:3]}")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_output_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "keyseg": "1"})
    del tensors
    _save_tokenizer(tokenizer, folder / TOKENIZER_DIR)
    for name, value in ((TRAIN_CONFIG_FILE, train_config), (PROVENANCE_FILE, data_provenance),
                        (EXPORT_INFO_FILE, export_info), (METRICS_FILE, eval_metrics)):
        if value is not None:
            atomic_write_json(folder / name, value)
        else:
            (folder / name).unlink(missing_ok=True)
    # After the weights and the tokenizer: a folder is recognised by its config.json.
    atomic_write_json(folder / CONFIG_FILE, {"model_type": MODEL_TYPE, "architectures": ["KeySegModel"],
                                             **model.config.to_dict()})
    write_model_card(folder, base_model=base_model)
    return folder


def write_model_card(folder: str | Path, base_model: str | None = None) -> Path:
    """(Re)write FOLDER/README.md from the folder's files, e.g. after putting `keyseg
    evaluate`'s metrics.json there as eval_metrics.json."""
    folder = Path(folder)
    card = model_card(read_config(folder), train_config=_read_json(folder / TRAIN_CONFIG_FILE),
                      data_provenance=_read_json(folder / PROVENANCE_FILE),
                      export_info=_read_json(folder / EXPORT_INFO_FILE),
                      eval_metrics=_read_json(folder / METRICS_FILE), base_model=base_model)
    atomic_write_text(folder / CARD_FILE, card)
    return folder / CARD_FILE


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """`tokenizer.save_pretrained` into a temporary folder, then each file renamed into
    `folder`; files of an older tokenizer that the new one does not write are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tokenizer.", dir=folder.parent) as tmp:
        tokenizer.save_pretrained(tmp)
        written = sorted(path for path in Path(tmp).iterdir() if path.is_file())
        for path in written:
            os.chmod(path, default_file_mode())
            os.replace(path, folder / path.name)
    names = {path.name for path in written}
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in names:
            stale.unlink()


# ---------------------------------------------------------------------------- model card
def model_card(config, *, train_config: dict | None = None, data_provenance: dict | None = None,
               export_info: dict | None = None, eval_metrics: dict | None = None,
               base_model: str | None = None) -> str:
    """README.md of an exported folder: Hub front matter, then what the model is, how to
    load it, what it was trained on and how it scored. Only what the inputs say."""
    train_splits = [entry for entry in (train_config or {}).get("data", {}).get("train", [])
                    if isinstance(entry, dict) and "split" in entry]
    sources = sorted({entry["split"].split(":")[0] for entry in train_splits})
    front = ["---", "library_name: keyseg", "tags:"]
    front += [f"- {tag}" for tag in ("keyseg", "image-segmentation", "referring-segmentation",
                                     "reasoning-segmentation")]
    front.append("pipeline_tag: image-segmentation")
    if base_model:
        front.append(f"base_model: {json.dumps(base_model)}")
    if sources:
        front += ["datasets:", *(f"- {json.dumps(source)}" for source in sources)]
    front.append("---")

    llm = config.llm
    lines = ["", "# KeySeg model", "",
             "A KeySeg model: LLaVA (CLIP vision tower, projector, causal LM) and SAM, with `[SEG]` "
             "and `[KEY]` tokens. Given an image and a query (a phrase or a question) it answers with "
             "`[SEG]` and a keyword after `[KEY]`, and segments what the query refers to: the `[SEG]` "
             "embedding" + (" prompts SAM's mask decoder (no keyword fusion)." if config.fusion == "none" else
                            ", fused with the `[KEY]` embedding, prompts SAM's mask decoder."), "",
             f"- LM: {llm.get('model_type')}, {llm.get('num_hidden_layers')} layers, hidden size "
             f"{llm.get('hidden_size')}, vocabulary {llm.get('vocab_size')}",
             f"- CLIP input {config.clip_image_size} px, SAM input {config.sam_image_size} px, "
             f"keyword fusion `{config.fusion}`, parameters {config.dtype}"]
    if export_info:
        best = export_info.get("best_giou")
        lines.append(f"- exported from checkpoint `{export_info.get('tag')}` (step {export_info.get('step')}, "
                     f"epoch {export_info.get('epoch')}"
                     + ("" if best is None else f", best val gIoU {100 * best:.1f}%") + ")")
    if base_model:
        lines.append(f"- initialised from `{base_model}`")

    lines += ["", "## Use", "", "```python",
              "from keyseg.model import KeySegModel",
              "from keyseg.model.pretrained import load_pretrained", "",
              'model = KeySegModel.from_pretrained("MODEL_DIR")  # in eval mode, on the CPU',
              'model, tokenizer = load_pretrained("MODEL_DIR")  # with its tokenizer (MODEL_DIR/tokenizer)',
              "```", "", "```bash",
              'keyseg predict --model MODEL_DIR --image photo.jpg --query "the dog on the left"',
              "keyseg evaluate --model MODEL_DIR --shards SHARDS --split reasonseg:val --out eval",
              "```", "",
              "`import keyseg` registers model_type `keyseg`, so `transformers.AutoConfig.from_pretrained"
              "(\"MODEL_DIR\")` reads `config.json` (its attributes are the KeySegConfig fields)."]

    lines += ["", "## Training data", ""]
    if train_splits:
        samples = (data_provenance or {}).get("splits", {})
        lines += ["| split | weight | samples |", "|---|---|---|"]
        for entry in train_splits:
            count = samples.get(entry["split"], {}).get("samples")
            lines.append(f"| {entry['split']} | {entry.get('weight', '')} | {'' if count is None else count} |")
        validation = train_config.get("data", {}).get("val")
        if validation:
            lines += ["", f"Validation split (best checkpoint): {validation}."]
    else:
        lines.append("Unknown: the folder holds no training config.")
    if data_provenance:
        keywords = (data_provenance.get("inputs") or {}).get("keywords") or {}
        lines += ["", f"Shard set: `{data_provenance.get('shards')}`; every shard's sha256 is listed in "
                      f"`{PROVENANCE_FILE}`."]
        if keywords.get("sha256"):
            lines.append(f"Keywords: `{keywords.get('path')}` (sha256 `{keywords['sha256']}`).")
    if train_config:
        lines.append(f"The full training config is `{TRAIN_CONFIG_FILE}`.")

    rows = [(name, value) for name, value in (eval_metrics or {}).items()
            if isinstance(value, dict) and "giou" in value and "ciou" in value]
    if rows:
        lines += ["", "## Metrics", "", "LISA protocol (`keyseg evaluate`), in percent.", "",
                  "| split | gIoU | cIoU | queries | trained on this split |", "|---|---|---|---|---|"]
        for name, value in rows:
            leakage = value.get("leakage") or {}
            seen = {True: "yes", False: "no"}.get(leakage.get("trained_on_this_split"), "")
            lines.append(f"| {name} | {100 * value['giou']:.1f} | {100 * value['ciou']:.1f} | "
                         f"{value.get('count', '')} | {seen} |")
    return "\n".join(front + lines) + "\n"


# ---------------------------------------------------------------------------- reading
def is_pretrained_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def read_config(folder: str | Path):
    """The KeySegConfig of an exported folder (old folders' config.json has no model_type)."""
    from keyseg.model.config import KeySegConfig

    path = Path(folder) / CONFIG_FILE
    try:
        return KeySegConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise DataError(path, f"not a KeySeg config: {error}") from None


def load_pretrained(folder: str | Path, device: str = "cpu"):
    """(model, tokenizer) from an exported folder, in eval mode; every weight must match."""
    from safetensors.torch import load_file

    from keyseg.model.keyseg import KeySegModel
    from keyseg.model.tokenizer import load_tokenizer

    folder = Path(folder)
    if not is_pretrained_folder(folder):
        raise DataError(folder, f"not an exported model folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    config = read_config(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_DIR)
    model = KeySegModel.from_config(config, tokenizer)
    state = load_file(str(folder / WEIGHTS_FILE))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise DataError(folder, f"{WEIGHTS_FILE} does not fit its {CONFIG_FILE}: {error}") from None
    if missing or unexpected:
        raise DataError(folder, f"{WEIGHTS_FILE} does not match its {CONFIG_FILE}: {len(missing)} missing weights "
                                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return model.to(device).eval(), tokenizer


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
