"""Reading DeepSpeed checkpoint files without letting them run code.

A `.pt` file is a pickle, and a plain unpickler calls whatever callable the file names
(`os.system`, `builtins.exec`, ...). DeepSpeed reads its checkpoints with
`torch.load(weights_only=False)`, i.e. with such an unpickler, in its engine (resume) and
in `zero_to_fp32` (export, evaluate, predict). Every checkpoint read in keyseg therefore
runs inside `restricted_loading(tag_dir)`: there, every `torch.load` in the process uses
torch's weights-only unpickler, which builds only tensors, storages, containers, numbers
and strings, plus the few DeepSpeed classes listed in `CHECKPOINT_GLOBALS`. A file that
names anything else is refused before anything in it runs: a `DataError` naming the file
and the global.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from keyseg.errors import DataError

# The globals DeepSpeed's checkpoints hold beyond torch's weights-only defaults. Read from
# the pickles of real checkpoints (DeepSpeed 0.19, ZeRO 0-3, fp32 and bf16): the model
# states files need none, the ZeRO optimizer states files the first three. fp16 cannot run
# on a CPU; its ZeRO optimizer states hold a DynamicLossScaler instead of a LossScaler (read
# from DeepSpeed's `state_dict`). Each is a plain value class: the unpickler may construct it
# or set its fields, which runs nothing else.
CHECKPOINT_GLOBALS = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",  # the ZeRO stage, an int Enum
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",  # the static loss scaler (fp32, bf16)
    "deepspeed.utils.tensor_fragment.fragment_address",  # ZeRO 1/2: a (numel, start) dataclass
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",  # fp16: the dynamic loss scaler
)

# torch reads these at every torch.load: FORCE wins over a caller's weights_only=False.
_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NOT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # setting both is an error in torch: unset it meanwhile


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def allowed_globals() -> list:
    """CHECKPOINT_GLOBALS as objects, in the form `torch.serialization.safe_globals` takes."""
    return [(_resolve(name), name) for name in CHECKPOINT_GLOBALS]


@contextmanager
def restricted_loading(tag_dir: str | os.PathLike):
    """Inside, every `torch.load` is weights-only with the checkpoint allow-list, whatever
    its caller asks; a refused file becomes a DataError naming it and the global it needs.

    `tag_dir` is the checkpoint tag folder being read (to name the refused file). The switch
    is torch's own environment variable, read at each `torch.load`: it holds for the whole
    process while inside (loads elsewhere only get stricter) and is put back on the way out.
    """
    saved = {name: os.environ.get(name) for name in (_FORCE, _FORCE_NOT)}
    os.environ[_FORCE] = "1"
    os.environ.pop(_FORCE_NOT, None)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            try:
                yield
            except pickle.UnpicklingError as error:
                raise _refusal(Path(tag_dir), error) from None
            except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile) as error:
                # A truncated or corrupt file (torch's zip reader, DeepSpeed's key lookups).
                first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
                raise DataError(tag_dir, f"unreadable checkpoint ({type(error).__name__}: {first})") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _refusal(tag_dir: Path, error: pickle.UnpicklingError) -> DataError:
    """The file torch refused and why, found by reading the pickles' instructions with
    torch's static scanner (nothing is unpickled)."""
    for path in sorted(tag_dir.glob("*.pt")):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except pickle.UnpicklingError as unreadable:  # instructions torch.save never writes
            return DataError(path, f"refusing to load it: its pickle is not plain checkpoint data ({unreadable})")
        except Exception:  # not a zip-format torch file: it cannot be scanned
            continue
        if unsafe:
            return DataError(path, _reason(unsafe[0]))
    # Not attributable to one file (a legacy-format file): the folder, and torch's words.
    text = str(error)
    named = re.search(r"GLOBAL (\S+)", text)
    if named:
        return DataError(tag_dir, _reason(named.group(1)))
    # torch puts the unpickler's own words between its advice paragraphs.
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()]
    detail = paragraphs[-2] if len(paragraphs) > 2 else text.splitlines()[0] if text else ""
    return DataError(tag_dir, f"refusing to load this checkpoint: it is not plain checkpoint data ({detail[:300]})")


def _reason(name: str) -> str:
    return (f"refusing to load it: it names the global {name}, which is not one of the types a "
            f"DeepSpeed checkpoint holds (loading it could run code)")
