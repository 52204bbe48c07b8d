"""Training configs: YAML files in keyseg/training/configs, overridable with key=value.

`load_train_config("tiny", ["optim.lr=1e-3", "model.fusion=none"])` reads the named file
(or a path), applies dotted overrides (values parsed as YAML scalars), and refuses any
key it does not know, listing the valid ones. The resolved config is saved with every
checkpoint, so a run can always be reproduced from its outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from keyseg.errors import UsageError
from keyseg.model.config import KeySegConfig

CONFIG_DIR = Path(__file__).parent / "configs"
MODEL_PRESETS = ("tiny", "lisa-7b", "keyseg-7b")


@dataclass
class DataConfig:
    train: list = field(default_factory=lambda: [{"split": "refcoco:train", "weight": 9.0},
                                                 {"split": "reasonseg:train", "weight": 3.0}])  # SOURCE:SPLIT + weight
    val: str | None = "reasonseg:val"  # validated every epoch; None: no validation
    num_queries: int = 3  # queries per image
    # ReasonSeg train, images with a keyword entry: probability of asking the bare query text
    # (the release's choice 2; its default 1.0); otherwise a template or the query plus an
    # explanatory request, half and half (docs/fidelity.md C4).
    explanatory: float = 0.1
    workers: int = 2  # loader processes per rank
    # The reference's model_max_length: text is cut at max_length - (CLIP patches - 1), i.e.
    # 512 - 255, the positions left once the image's patches replace their placeholder.
    max_length: int = 512
    val_batch_size: int = 1


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear warm-up, then linear decay to 0 at the last step
    epochs: int = 20
    steps_per_epoch: int = 200  # optimizer steps per epoch per rank
    micro_batch: int = 2  # images per rank per forward
    grad_accum: int = 10
    grad_clip: float = 1.0
    # Learning-rate multipliers by parameter-name prefix, e.g. {"sam.mask_decoder": 0.1}; the
    # longest matching prefix wins, everything else uses `lr`. A prefix that matches no
    # trainable parameter is an error (it is almost always a typo).
    lr_scales: dict = field(default_factory=dict)


FRESH_MODULES = ("text_hidden_fcs", "keyword_fusion", "embedding_table_proj", "keyword_text_proj", "mm_projector")
"""Modules `init.fresh` may keep at their initial values instead of loading them from init.lisa."""


@dataclass
class InitConfig:
    """Where weights come from; all empty: random init (tiny models only)."""

    lisa: str | None = None  # LISA/KeySeg-format checkpoint (file or sharded folder)
    llava: str | None = None  # HF LLaVA-1.5 folder
    llm: str | None = None  # causal LM folder
    vision: str | None = None  # CLIP vision folder (LISA exports do not contain it)
    # transformers SamModel folder or sam_vit_h_4b8939.pth; with `lisa` it replaces the
    # file's whole SAM (the release rebuilds SAM from sam_vit_h_4b8939.pth after loading LISA)
    sam: str | None = None
    # modules of FRESH_MODULES left at their initial values instead of taken from `lisa`
    # (the release rebuilds text_hidden_fcs: [text_hidden_fcs])
    fresh: list = field(default_factory=list)
    tokenizer: str | None = None  # tokenizer folder; None: a word-level tokenizer built from the shards


@dataclass
class TrainConfig:
    model: dict = field(default_factory=dict)  # KeySegConfig fields (keyseg.model.config)
    # The architecture whose KeySegConfig defaults `model` overrides: "tiny" or "lisa-7b"
    # (LISA-7B-v1, which both 7B presets start from; "keyseg-7b" is accepted as its old name).
    model_preset: str = "tiny"
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    zero_stage: int = 2
    precision: str = "bf16"  # bf16 | fp16 | fp32
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2  # step checkpoints kept (the best one is kept apart)
    patience: int = 5  # epochs without a better val gIoU before stopping; 0: never stop early
    export: bool = True  # write OUT/export (the best checkpoint, else the last) when training ends

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _valid_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for item in dataclasses.fields(cls):
        name = f"{prefix}{item.name}"
        kind = item.default_factory if item.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            keys += _valid_keys(kind, f"{name}.")
        elif item.name == "model":
            keys.append(f"{name}.<KeySegConfig field>")
        else:
            keys.append(name)
    return keys


class ConfigError(UsageError):
    """A config file or override that cannot be used (exit 2)."""


def _apply(config, key: str, value, full_key: str):
    head, _, rest = key.partition(".")
    names = {item.name for item in dataclasses.fields(config)}
    if head not in names:
        raise ConfigError(f"unknown config key {full_key!r}; valid keys: {', '.join(_valid_keys(TrainConfig))}")
    current = getattr(config, head)
    if rest:
        if isinstance(current, dict):  # model.<field>: checked against KeySegConfig when the model is built
            current[rest] = _coerce_model_field(rest, value, full_key) if head == "model" else value
            return
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{full_key!r}: {head} has no sub-keys")
        _apply(current, rest, value, full_key)
    elif dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ConfigError(f"{full_key!r} needs a mapping")
        for sub_key, sub_value in value.items():
            _apply(current, sub_key, sub_value, f"{full_key}.{sub_key}")
    elif head == "model" and isinstance(value, dict):
        current.update({name: _coerce_model_field(name, item, f"model.{name}") for name, item in value.items()})
    else:
        setattr(config, head, _coerce(current, value, full_key))


def _coerce_model_field(name: str, value, full_key: str):
    """A model.<field> value with the type of KeySegConfig's default (`model.ce_weight=1e-4`)."""
    default = getattr(KeySegConfig(), name, None)
    return _coerce(default, value, full_key) if isinstance(default, (int, float)) else value


def _coerce(current, value, full_key: str):
    """YAML reads `2e-3` as a string (no dot): convert to the field's type where clear."""
    if isinstance(current, bool) or current is None or value is None:
        return value
    if isinstance(current, (int, float)) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            return type(current)(value) if not (isinstance(current, int) and isinstance(value, float)) else value
        except ValueError:
            raise ConfigError(f"{full_key!r}: {value!r} is not a {type(current).__name__}") from None
    return value


def resolve_config_path(name_or_file: str) -> Path:
    path = Path(name_or_file)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_file}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"no config file {name_or_file!r} and no built-in config of that name (built-in: {known})")


def _parse_yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}{at})") from None


def load_train_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    path = resolve_config_path(name_or_file)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    document = _parse_yaml(text, str(path))
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys to values, not a {type(document).__name__}")
    config = TrainConfig()
    for key, value in document.items():
        _apply(config, str(key), value, str(key))
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} must look like key=value")
        _apply(config, key.strip(), _parse_yaml(raw, f"override {override!r}"), key.strip())
    check_train_config(config)
    return config


def _require(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: must be {expected}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def check_train_config(config: TrainConfig) -> None:
    """Refuse values no run can use, before any model or data is touched (--dry-run too)."""
    optim, data = config.optim, config.data
    for key, value in (("optim.micro_batch", optim.micro_batch), ("optim.grad_accum", optim.grad_accum),
                       ("optim.epochs", optim.epochs), ("optim.steps_per_epoch", optim.steps_per_epoch),
                       ("data.num_queries", data.num_queries), ("data.max_length", data.max_length),
                       ("data.val_batch_size", data.val_batch_size), ("checkpoint_every", config.checkpoint_every)):
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, value,
                 "a whole number >= 1")
    for key, value in (("optim.warmup_steps", optim.warmup_steps), ("data.workers", data.workers),
                       ("keep_checkpoints", config.keep_checkpoints), ("patience", config.patience)):
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, key, value,
                 "a whole number >= 0")
    _require(_is_number(optim.lr) and optim.lr > 0, "optim.lr", optim.lr, "a number > 0")
    _require(_is_number(optim.weight_decay) and optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay,
             "a number >= 0")
    _require(_is_number(optim.grad_clip) and optim.grad_clip >= 0, "optim.grad_clip", optim.grad_clip,
             "a number >= 0")
    _require(isinstance(optim.betas, list) and len(optim.betas) == 2
             and all(_is_number(beta) and 0 <= beta < 1 for beta in optim.betas),
             "optim.betas", optim.betas, "two numbers in [0, 1)")
    _require(isinstance(optim.lr_scales, dict) and all(_is_number(v) and v >= 0 for v in optim.lr_scales.values()),
             "optim.lr_scales", optim.lr_scales, "a mapping of parameter-name prefixes to numbers >= 0")
    _require(_is_number(data.explanatory) and 0 <= data.explanatory <= 1, "data.explanatory", data.explanatory,
             "a probability in [0, 1]")
    _require(isinstance(data.train, list) and bool(data.train)
             and all(isinstance(item, dict) and isinstance(item.get("split"), str) and ":" in item["split"]
                     and _is_number(item.get("weight", 1.0)) and item.get("weight", 1.0) > 0
                     for item in data.train),
             "data.train", data.train, "a non-empty list of {split: SOURCE:SPLIT, weight: number > 0}")
    _require(data.val is None or (isinstance(data.val, str) and ":" in data.val), "data.val", data.val,
             "SOURCE:SPLIT or null")
    _require(config.zero_stage in (0, 1, 2, 3) and not isinstance(config.zero_stage, bool), "zero_stage",
             config.zero_stage, "0, 1, 2 or 3")
    _require(config.precision in ("bf16", "fp16", "fp32"), "precision", config.precision, "bf16, fp16 or fp32")
    _require(isinstance(config.seed, int) and not isinstance(config.seed, bool), "seed", config.seed,
             "a whole number")
    _require(config.model_preset in MODEL_PRESETS, "model_preset", config.model_preset,
             " or ".join(MODEL_PRESETS))
    init = config.init
    _require(isinstance(init.fresh, list) and all(name in FRESH_MODULES for name in init.fresh), "init.fresh",
             init.fresh, f"a list of module names from {', '.join(FRESH_MODULES)}")

