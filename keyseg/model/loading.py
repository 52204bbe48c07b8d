"""Checkpoint loading for KeySegModel: read a file/folder, map its keys, load strictly and loudly.

The model is built by the caller (from a `KeySegConfig`); these functions only fill it.
They work with any module exposing the KeySegModel attributes (`vision_tower`,
`mm_projector`, `llm`, `sam`, `text_hidden_fcs`, `keyword_fusion`, `embedding_table_proj`,
`keyword_text_proj`). Nothing is written into the model unless the whole load validates:
a missing required weight, a key we do not know where to put, or a shape mismatch raises
`CheckpointError` first.

- `from_lisa(path, model, vision=None, sam=None, fresh=())`: a LISA / KeySeg release
  checkpoint; `sam` replaces its SAM, `fresh` modules keep their initial values (what the
  release does when it fine-tunes from LISA-7B-v1).
- `from_parts(model, llm=, vision=, sam=, llava=)`: the pretrained parts separately.
- `read_state_dict`, `load_into` and the key mappers (`keymaps.py`) for anything else.
Layouts: docs/checkpoints.md.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from .keymaps import (  # noqa: F401  (re-exported)
    KEYSEG_MODULES,
    CheckpointError,
    Mapped,
    StateDict,
    is_llava_hf,
    map_causal_lm_keys,
    map_clip_vision_keys,
    map_lisa_keys,
    map_llava_hf_keys,
    map_original_sam_keys,
    map_sam_keys,
)

PathLike = str | os.PathLike

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


# ----------------------------------------------------------------------------- reading


def _read_pickle(path: Path) -> StateDict:
    kwargs = {"mmap": True} if zipfile.is_zipfile(path) else {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except Exception as error:  # the restricted unpickler raises UnpicklingError/RuntimeError
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor state dict loadable with "
            f"torch.load(weights_only=True) ({type(error).__name__}: {str(error).splitlines()[0][:300]})"
        ) from error
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        kinds = sorted({type(v).__name__ for v in obj.values()}) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} does not hold a {{name: tensor}} state dict (found {kinds})")
    return dict(obj)


def _read_file(path: Path) -> StateDict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in _PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise CheckpointError(f"unknown checkpoint file type {path.name!r} (expected .safetensors, "
                          f"{', '.join(_PICKLE_SUFFIXES)}, or a folder)")


def _read_sharded(folder: Path, index_path: Path) -> StateDict:
    weight_map = json.loads(index_path.read_text()).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no weight_map")
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = (folder / shard).resolve()
        if shard_path.parent != folder.resolve():
            raise CheckpointError(f"{index_path} names a shard outside its folder: {shard!r}")
        if not shard_path.is_file():
            raise CheckpointError(f"shard {shard!r} listed in {index_path} does not exist")
        part = _read_file(shard_path)
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"keys present in more than one shard of {folder}: {twice[:5]}")
        state.update(part)
    absent = sorted(k for k in weight_map if k not in state)
    if absent:
        raise CheckpointError(f"{len(absent)} keys of {index_path.name} are in none of its shards: {absent[:5]}")
    return state


def read_state_dict(path: PathLike) -> StateDict:
    """Read a `.safetensors` / `.bin` / `.pt` / `.pth` file, or a folder holding a sharded
    index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) or one weights file.
    Pickles are read with `torch.load(weights_only=True)`: anything but tensors is refused."""
    path = Path(path)
    if path.is_file():
        return _read_file(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    for name in _INDEX_FILES:
        if (path / name).is_file():
            return _read_sharded(path, path / name)
    for name in _SINGLE_FILES:
        if (path / name).is_file():
            return _read_file(path / name)
    candidates = sorted(p for p in path.iterdir()
                        if p.is_file() and (p.suffix == ".safetensors" or p.suffix in _PICKLE_SUFFIXES))
    if len(candidates) == 1:
        return _read_file(candidates[0])
    hint = ""
    if any(p.name.startswith("global_step") or p.name == "latest" for p in path.iterdir()):
        hint = " (a DeepSpeed checkpoint: convert it with its zero_to_fp32.py first)"
    raise CheckpointError(f"cannot tell which weights to read in {path}: "
                          f"{[p.name for p in candidates] or 'no weights file'}{hint}")


# ----------------------------------------------------------------------------- report


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    """Model keys (in the loaded scope) the checkpoint did not provide: left as initialised."""
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Checkpoint keys discarded on purpose (recomputed buffers, SAM pixel stats, CLIP text tower...)."""
    shape_mismatches: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    """Vocabulary growth: "key: rows a..b-1 new (initialised to ...)"."""
    missing_required: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_required or self.unexpected or self.shape_mismatches)

    def format(self, limit: int = 10) -> str:
        def listing(title: str, keys: list[str]) -> list[str]:
            if not keys:
                return []
            more = [f"    ... and {len(keys) - limit} more"] if len(keys) > limit else []
            return [f"  {title} ({len(keys)}):"] + [f"    {k}" for k in keys[:limit]] + more

        verb = f"loaded {len(self.loaded)} tensors" if self.ok else f"{len(self.loaded)} tensors matched"
        lines = [f"{verb} from " + ("; ".join(self.sources) or "a state dict")]
        if self.missing_required:  # per top-level module, so one key is not buried under a whole tower
            lines.append(f"  MISSING REQUIRED ({len(self.missing_required)}):")
            groups = defaultdict(list)
            for key in self.missing_required:
                groups[key.split(".")[0]].append(key)
            for group, keys in sorted(groups.items()):
                more = f", ... and {len(keys) - 3} more" if len(keys) > 3 else ""
                lines.append(f"    {group}.* ({len(keys)}): " + ", ".join(keys[:3]) + more)
        lines += listing("UNEXPECTED (no place in the model)", self.unexpected)
        lines += listing("SHAPE MISMATCH", self.shape_mismatches)
        fresh = [k for k in self.missing if k not in set(self.missing_required)]
        if fresh:
            groups: dict[str, int] = defaultdict(int)
            for key in fresh:
                groups[key.split(".")[0]] += 1
            lines.append("  initialised fresh (not in checkpoint): "
                         + ", ".join(f"{g}.* ({n})" for g, n in sorted(groups.items())))
        lines += listing("resized vocabulary", self.resized)
        lines += listing("dropped", self.dropped)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# ----------------------------------------------------------------------------- loading


def _canonical(key: str) -> str:
    """One spelling for keys that differ only by wrapping: legacy CLIP `vision_model.`, peft."""
    if key.startswith("vision_tower.vision_model."):
        key = "vision_tower." + key[len("vision_tower.vision_model."):]
    if key.startswith("llm.base_model.model."):
        key = "llm." + key[len("llm.base_model.model."):]
    return key.replace(".base_layer.", ".")


def _embedding_keys(model: nn.Module, model_keys: Iterable[str]) -> set[str]:
    """State-dict keys of the LM's input/output embedding matrices (vocab-resizable)."""
    llm = getattr(model, "llm", None)
    weights = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            weights.append(getattr(llm, getter)().weight)
        except Exception:  # not a transformers model, or no output embeddings
            pass
    names = {n for n, p in model.named_parameters(remove_duplicate=False) if any(p is w for w in weights)}
    return names or {k for k in model_keys if k.startswith("llm.") and k.endswith(("embed_tokens.weight",
                                                                                   "lm_head.weight"))}


def _aliases(model_state: Mapping[str, torch.Tensor]) -> dict[str, set[str]]:
    """Keys sharing one tensor (tied weights): loading one loads all."""
    groups: dict[tuple, set[str]] = defaultdict(set)
    for key, tensor in model_state.items():
        if tensor.numel() and tensor.device.type != "meta":
            groups[(tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)].add(key)
    return {key: group for group in groups.values() for key in group}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], required: Iterable[str] = ("",),
              optional: Iterable[str] = (), *, dropped: Iterable[str] = (), ignore: Iterable[str] = (),
              resize_vocab: bool = True, sources: Iterable[str] = (),
              hints: Mapping[str, str] | None = None) -> LoadReport:
    """Load an already-mapped state dict (our keys) into `model`, strictly and atomically.

    required: key prefixes defining the scope; every model key under them must be provided,
        except keys under an `optional` prefix ("" = the whole model). LoRA adapter
        parameters of a peft-wrapped LM are never required.
    optional: prefixes of all-or-nothing groups (e.g. `keyword_fusion.`): may be absent
        entirely (reported as initialised fresh), but a partial group is an error.
    ignore: prefixes of checkpoint keys to discard explicitly (reported as dropped).
    resize_vocab: a checkpoint embedding / lm_head with fewer rows than the model's (a smaller
        vocab) fills the first rows; the new rows keep the model's values
        (`KeySegModel.setup_tokenizer` drew them as transformers 4.31 does, which is what the
        release trained from).
    Raises `CheckpointError` (nothing written) on missing required keys, unexpected keys or
    shape mismatches. Returns a `LoadReport`.
    """
    required, optional, ignore = tuple(required), tuple(optional), tuple(ignore)
    report = LoadReport(dropped=list(dropped), sources=list(sources))
    model_state = model.state_dict(keep_vars=True)
    by_canonical: dict[str, str] = {}
    for key in model_state:
        by_canonical.setdefault(_canonical(key), key)
    resizable = _embedding_keys(model, model_state)
    aliases = _aliases(model_state)

    def named(key: str) -> str:  # our key, and the checkpoint's spelling when it differs
        source = state.source(key) if isinstance(state, Mapped) else key
        return key if source == key else f"{key} (checkpoint: {source})"

    to_load: dict[str, torch.Tensor] = {}
    mismatched: set[str] = set()
    for key, value in state.items():
        if _under(key, ignore):
            report.dropped.append(key)
            continue
        target = by_canonical.get(_canonical(key))
        if target is None:
            report.unexpected.append(state.source(key) if isinstance(state, Mapped) else key)
            continue
        if target in to_load or target in mismatched:
            raise CheckpointError(f"two checkpoint keys map to the model's {target!r} (one is {named(key)})")
        have = model_state[target]
        if tuple(value.shape) == tuple(have.shape):
            to_load[target] = value
        elif (resize_vocab and target in resizable and value.dim() == have.dim() >= 1
              and value.shape[1:] == have.shape[1:] and value.shape[0] < have.shape[0]):
            grown = have.detach().clone()
            rows = value.shape[0]
            grown[:rows] = value.to(grown.dtype)
            to_load[target] = grown
            report.resized.append(f"{target}: checkpoint {rows} rows, model {have.shape[0]}; "
                                  f"rows {rows}..{have.shape[0] - 1} kept the model's values")
        else:
            mismatched.add(target)
            report.shape_mismatches.append(
                f"{named(key)}: checkpoint {tuple(value.shape)} vs model {tuple(have.shape)}")

    for group in {frozenset(aliases[k]) for k in to_load if len(aliases.get(k, ())) > 1}:
        given = sorted(k for k in group if k in to_load)
        if len(given) > 1 and any(not torch.equal(to_load[given[0]], to_load[k]) for k in given[1:]):
            raise CheckpointError(f"the model ties {given} but the checkpoint holds different values for them")
    loaded = set()
    for key in to_load:
        loaded |= aliases.get(key, {key})
    report.loaded = sorted(to_load)
    report.missing = sorted(k for k in model_state
                            if _under(k, required) and k not in loaded and k not in mismatched)
    report.missing_required = [k for k in report.missing
                               if not _under(k, optional) and ".lora_" not in k]
    for prefix in optional:
        group = [k for k in model_state if k.startswith(prefix) and ".lora_" not in k]
        got = [k for k in group if k in loaded]
        if got and len(got) < len(group):
            report.missing_required += [k for k in group if k not in loaded]
    report.missing_required = sorted(set(report.missing_required))

    if not report.ok:
        lines = ["checkpoint does not fit the model (nothing was loaded): "
                 f"{len(report.missing_required)} required weights missing, "
                 f"{len(report.unexpected)} unexpected keys, {len(report.shape_mismatches)} shape mismatches"]
        for prefix, hint in (hints or {}).items():
            if any(k.startswith(prefix) for k in report.missing_required):
                lines.append(f"hint: {hint}")
        raise CheckpointError("\n".join(lines + [report.format()]), report)

    result = model.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; never ignore it anyway
        raise CheckpointError(f"load_state_dict rejected keys {result.unexpected_keys[:5]}", report)
    return report


# ----------------------------------------------------------------------------- entry points


def _merge(into: Mapped, part: StateDict, name: str, notes: list[str], origin: dict[str, str]) -> None:
    overridden = sorted(k for k in part if k in into)
    if overridden:
        by_source = defaultdict(int)
        for key in overridden:
            by_source[origin[key]] += 1
        notes.append(f"{name}= supersedes {len(overridden)} keys from "
                     + ", ".join(f"{s} ({n})" for s, n in by_source.items())
                     + f", e.g. {overridden[0]}")
    for key, value in part.items():
        into[key] = value
        into.origin[key] = part.source(key) if isinstance(part, Mapped) else key
    origin.update({k: name for k in part})


def from_lisa(path: PathLike, model: nn.Module, vision: PathLike | None = None, *,
              sam: PathLike | None = None, fresh: Iterable[str] = (), require_vision: bool = True,
              ignore: Iterable[str] = (), resize_vocab: bool = True) -> LoadReport:
    """Load a LISA / KeySeg checkpoint (file or folder) into a built model.

    Required from the file: everything of the model except `vision_tower.*` (LISA exports drop
    it) and the KeySeg-only modules (`keyword_fusion.*`, `embedding_table_proj.*`,
    `keyword_text_proj.*`: absent in LISA files -> reported as initialised fresh; if present they
    must be complete). The vision tower comes from the file if it holds one, else from `vision`
    (a CLIPVisionModel / CLIPModel folder or file; it supersedes the file's tower). With neither,
    this raises unless `require_vision=False` (the model's tower is already loaded).
    `sam`: a SAM checkpoint (`sam_vit_h_4b8939.pth` or a transformers SamModel folder) whose
    weights replace the file's whole SAM, as the release rebuilds SAM after loading
    LISA-7B-v1 (ha-erim/KeySeg model/KISA.py:281-289, finetune.py:250-251).
    `fresh`: top-level modules (e.g. "text_hidden_fcs", which the release rebuilds) whose
    weights in the file are discarded: they keep the model's initial values.
    `ignore`: prefixes of mapped keys to discard explicitly (e.g. "keyword_fusion." for a model
    built without fusion).
    """
    state, dropped = map_lisa_keys(read_state_dict(path))
    sources = [f"lisa={path}"]
    notes: list[str] = []
    origin = {k: "lisa" for k in state}
    if vision is not None:
        tower, vision_dropped = map_clip_vision_keys(read_state_dict(vision))
        dropped += vision_dropped
        sources.append(f"vision={vision}")
        _merge(state, tower, "vision", notes, origin)
    if sam is not None:
        sam_state, sam_dropped = map_sam_keys(read_state_dict(sam))
        dropped += sam_dropped
        sources.append(f"sam={sam}")
        replaced = [k for k in state if k.startswith("sam.")]
        for key in replaced:  # the file's SAM is replaced whole, not patched
            del state[key]
        if replaced:
            notes.append(f"sam= replaces the {len(replaced)} SAM tensors of {path}")
        _merge(state, sam_state, "sam", notes, origin)
    fresh = tuple(f"{name.rstrip('.')}." for name in fresh)
    unknown = [p for p in fresh if not any(k.startswith(p) for k in model.state_dict())]
    if unknown:
        raise CheckpointError(f"fresh: the model has no module {', '.join(p[:-1] for p in unknown)}")
    if fresh:
        notes.append("kept at their initial values (not loaded): " + ", ".join(p + "*" for p in fresh))
    optional = list(KEYSEG_MODULES) + list(fresh) + ([] if require_vision else ["vision_tower."])
    hints = {"vision_tower.": f"{path} holds no vision tower (LISA exports drop it): pass vision=<CLIP folder>, "
                              "or require_vision=False if the model's tower is already loaded"}
    report = load_into(model, state, required=("",), optional=optional, dropped=dropped,
                       ignore=tuple(ignore) + fresh, resize_vocab=resize_vocab, sources=sources, hints=hints)
    report.notes += notes
    return report


def from_parts(model: nn.Module, llm: PathLike | None = None, vision: PathLike | None = None,
               sam: PathLike | None = None, llava: PathLike | None = None, *,
               resize_vocab: bool = True) -> LoadReport:
    """Load pretrained parts into a built model; parts not given are left untouched.

    llm: causal-LM folder/file (HF layout: `model.*`, `lm_head.weight`) -> requires all `llm.*`.
    vision: CLIPVisionModel folder/file, or a full CLIPModel (its `vision_model.*`) -> all
        `vision_tower.*`.
    sam: transformers SamModel folder/file or the original `sam_vit_h_4b8939.pth` -> all `sam.*`.
    llava: HF LLaVA-1.5 (`LlavaForConditionalGeneration`, current or legacy llava-hf layout)
        -> all `vision_tower.*`, `mm_projector.*` (must be "mlp2x_gelu"), `llm.*`; an original
        LLaVA folder (`model.mm_projector.*`) is read with the LISA mapping and, as it holds no
        CLIP tower, needs `vision=` too. `llm`/`vision` given alongside `llava` supersede its parts.
    Everything is validated before anything is written.
    """
    if all(part is None for part in (llm, vision, sam, llava)):
        raise ValueError("from_parts needs at least one of llm=, vision=, sam=, llava=")
    state = Mapped()
    origin: dict[str, str] = {}
    dropped: list[str] = []
    notes: list[str] = []
    sources: list[str] = []
    required: list[str] = []
    if llava is not None:
        raw = read_state_dict(llava)
        part, part_dropped = map_llava_hf_keys(raw) if is_llava_hf(raw) else map_lisa_keys(raw)
        has_tower = any(k.startswith("vision_tower.") for k in part)
        if not has_tower and vision is None:
            raise CheckpointError(f"llava={llava} holds no vision tower: pass vision=<CLIP folder> too")
        _merge(state, part, "llava", notes, origin)
        dropped += part_dropped
        sources.append(f"llava={llava}")
        required += ["vision_tower.", "mm_projector.", "llm."]
    mappers = (("llm", llm, map_causal_lm_keys, "llm."), ("vision", vision, map_clip_vision_keys, "vision_tower."),
               ("sam", sam, map_sam_keys, "sam."))
    for name, path, mapper, prefix in mappers:
        if path is None:
            continue
        part, part_dropped = mapper(read_state_dict(path))
        _merge(state, part, name, notes, origin)
        dropped += part_dropped
        sources.append(f"{name}={path}")
        required.append(prefix)
    report = load_into(model, state, required=tuple(dict.fromkeys(required)), dropped=dropped,
                       resize_vocab=resize_vocab, sources=sources)
    report.notes += notes
    return report
