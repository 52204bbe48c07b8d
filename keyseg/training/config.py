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

MIXTURE_KINDS = ("sem_seg", "refer_seg", "vqa", "reason_seg")
"""LISA's four kinds of training sample, in its order (dvlab-research/LISA train_ds.py:48)."""
SOURCE_KINDS = {
    "ade20k": "sem_seg", "cocostuff": "sem_seg", "pascal_part": "sem_seg", "paco_lvis": "sem_seg",
    "mapillary": "sem_seg", "refclef": "refer_seg", "refcoco": "refer_seg", "refcoco+": "refer_seg",
    "refcocog": "refer_seg", "llava_instruct_150k": "vqa", "reasonseg": "reason_seg",
}
"""The kind a shard split's source belongs to (to show a plain `data.train` list as a mixture)."""


@dataclass
class DataConfig:
    train: list = field(default_factory=lambda: [{"split": "refcoco:train", "weight": 9.0},
                                                 {"split": "reasonseg:train", "weight": 3.0}])  # SOURCE:SPLIT + weight
    # LISA's two-level mixture, when set: {kind: {rate, datasets: [{split, weight}]}} with kinds
    # from MIXTURE_KINDS. A kind is drawn by rate, then a dataset within it by weight (the
    # reference draws kinds with its sample rates, then datasets uniformly). `train` is then
    # derived from it (`mixture_train`); rate 0 leaves a kind out. Empty: `train` as given.
    mixture: dict = field(default_factory=dict)
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
    # (LISA-7B's: LLaMA-7B, CLIP ViT-L/14, SAM ViT-H; every 7B preset, the lisa-7b config
    # included; "keyseg-7b" is accepted as its old name).
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
    if rest and isinstance(config, DataConfig) and head == "mixture":
        # data.mixture.sem_seg.rate=0: a path through the nested mapping (kinds have no dots)
        if current is None:
            current = config.mixture = {}
        *parents, last = rest.split(".")
        for part in parents:
            current = current.setdefault(part, {})
            if not isinstance(current, dict):
                raise ConfigError(f"{full_key!r}: {part} has no sub-keys")
        current[last] = value
        return
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
    _derive_train_from_mixture(config.data)
    check_train_config(config)
    return config


def _derive_train_from_mixture(data: DataConfig) -> None:
    """With a mixture, `data.train` is what the loader reads: derived, never given as well."""
    if not data.mixture:
        return
    _check_mixture(data.mixture)
    derived = mixture_train(data.mixture)
    if data.train not in (DataConfig().train, derived):
        raise ConfigError("data.train and data.mixture are both set: with a mixture, data.train is derived from "
                          "it; give one (data.mixture={} to train from data.train)")
    data.train = derived


def _check_mixture(mixture) -> None:
    expected = (f"a mapping of kinds ({', '.join(MIXTURE_KINDS)}) to {{rate: number >= 0, datasets: non-empty "
                "list of {split: SOURCE:SPLIT, weight: number > 0}}, at least one rate > 0")
    ok = isinstance(mixture, dict) and all(kind in MIXTURE_KINDS for kind in mixture)
    for kind, part in (mixture.items() if ok else []):
        ok = ok and isinstance(part, dict) and set(part) <= {"rate", "datasets"} and _is_number(part.get("rate")) \
            and part["rate"] >= 0 and _is_split_list(part.get("datasets"))
    ok = ok and any(part["rate"] > 0 for part in mixture.values())
    _require(ok, "data.mixture", mixture, expected)


def mixture_train(mixture: dict) -> list[dict]:
    """The loader's flat {split, weight} list for a mixture: a dataset's weight is its kind's
    rate times its share of the kind's weights, so the samples it gets are the same."""
    train = []
    for kind in MIXTURE_KINDS:
        part = mixture.get(kind)
        if not part or part["rate"] == 0:
            continue
        total = sum(float(item.get("weight", 1.0)) for item in part["datasets"])
        train += [{"split": item["split"], "weight": float(part["rate"]) * float(item.get("weight", 1.0)) / total}
                  for item in part["datasets"]]
    return train


@dataclass
class MixtureRow:
    """One dataset of the training mixture, as `--dry-run` prints it."""

    kind: str
    rate: float  # the kind's sample rate (relative to the other kinds')
    split: str
    weight: float  # within the kind
    share: float  # fraction of all training samples drawn from this dataset


def mixture_rows(data: DataConfig) -> list[MixtureRow]:
    """The mixture by kind. A plain `data.train` list is grouped by its sources' kinds
    (SOURCE_KINDS; "other" for a source it does not name), a kind's rate being the sum of
    its splits' weights: the same draws."""
    if data.mixture:
        parts = {kind: (float(part["rate"]), [(item["split"], float(item.get("weight", 1.0)))
                                              for item in part["datasets"]])
                 for kind, part in data.mixture.items()}
    else:
        parts = {}
        for item in data.train:
            kind = SOURCE_KINDS.get(item["split"].partition(":")[0], "other")
            parts.setdefault(kind, (0.0, []))[1].append((item["split"], float(item.get("weight", 1.0))))
        parts = {kind: (sum(weight for _, weight in items), items) for kind, (_, items) in parts.items()}
    total_rate = sum(rate for rate, _ in parts.values())
    order = [kind for kind in (*MIXTURE_KINDS, "other") if kind in parts]
    rows = []
    for kind in order:
        rate, items = parts[kind]
        total = sum(weight for _, weight in items)
        rows += [MixtureRow(kind, rate, split, weight, rate / total_rate * weight / total) for split, weight in items]
    return rows


def missing_mixture_splits(data: DataConfig, available) -> dict[str, list[str]]:
    """Training splits (by kind) that a shard set with splits `available` does not hold."""
    missing: dict[str, list[str]] = {}
    for row in mixture_rows(data):
        if row.split not in available and not (data.mixture and row.rate == 0):
            missing.setdefault(row.kind, []).append(row.split)
    return missing


def _require(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: must be {expected}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _is_split_list(items) -> bool:
    return isinstance(items, list) and bool(items) and all(
        isinstance(item, dict) and isinstance(item.get("split"), str) and ":" in item["split"]
        and _is_number(item.get("weight", 1.0)) and item.get("weight", 1.0) > 0 for item in items)


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
    _require(_is_split_list(data.train), "data.train", data.train,
             "a non-empty list of {split: SOURCE:SPLIT, weight: number > 0}")
    if data.mixture:
        _check_mixture(data.mixture)
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

