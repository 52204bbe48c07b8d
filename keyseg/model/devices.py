"""Where and in what precision a model runs for inference: `--device`, `--dtype`, `--load-in`.

`--device auto` takes the first GPU when CUDA is available, else the CPU. `--dtype` names
the precision as the reference's `--precision` does (fp32, bf16, fp16). `--load-in 8bit`
or `4bit` quantises the language model's linear layers with bitsandbytes, as LISA's
chat.py does with `load_in_8bit` / `load_in_4bit` (its vision tower, SAM and the heads stay
in `--dtype`); bitsandbytes needs a CUDA device, so asking for it elsewhere is a clear
error before any weight is read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from keyseg.errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOAD_IN = ("full", "8bit", "4bit")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    load_in: str = "full"

    def describe(self) -> str:
        name = {value: key for key, value in DTYPES.items()}[self.dtype]
        return f"{self.device} {name}" + (f" ({self.load_in} language model)" if self.load_in != "full" else "")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device; UsageError when it is not there.
    `auto` and `cuda` pick GPU `local_rank` (one GPU per process in multi-process runs)."""
    name = name.strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
        index = local_rank if name == "cuda" else _device_index(name)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def _device_index(name: str) -> int:
    index = name.split(":", 1)[1]
    if not index.isdigit():
        raise UsageError(f"--device {name}: the GPU number must be a non-negative integer")
    return int(index)


def resolve_placement(device: str = "cpu", dtype: str = "fp32", load_in: str = "full",
                      local_rank: int = 0) -> Placement:
    """Check the three options together; UsageError (exit 2) names the option that cannot work."""
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if load_in not in LOAD_IN:
        raise UsageError(f"--load-in must be one of {', '.join(LOAD_IN)}, got {load_in!r}")
    placement = Placement(resolve_device(device, local_rank), DTYPES[dtype], load_in)
    if load_in != "full":
        if placement.device.type != "cuda":
            raise UsageError(f"--load-in {load_in} needs a CUDA device (bitsandbytes); the model would run on "
                             f"{placement.device}")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UsageError(f"--load-in {load_in} needs bitsandbytes: pip install bitsandbytes")
    return placement


def place_model(model, placement: Placement):
    """`model` (a KeySegModel on the CPU, in eval mode) moved to the placement, in place."""
    model.to(dtype=placement.dtype)
    if placement.load_in != "full":
        _quantize_linear_layers(model.llm, placement)  # after the cast: it must not touch int8 weights
    return model.to(placement.device).eval()


def _quantize_linear_layers(module: torch.nn.Module, placement: Placement) -> None:
    """Replace the language model's nn.Linear layers (not its output head) with bitsandbytes
    ones holding the same weights; they quantise when moved to the GPU."""
    import bitsandbytes as bnb

    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear) and name != "lm_head":
            bias = child.bias is not None
            if placement.load_in == "8bit":
                layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias,
                                            has_fp16_weights=False, threshold=6.0)
                layer.weight = bnb.nn.Int8Params(child.weight.data.to(placement.dtype), requires_grad=False)
            else:
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias,
                                          compute_dtype=placement.dtype, quant_type="nf4")
                layer.weight = bnb.nn.Params4bit(child.weight.data.to(placement.dtype), requires_grad=False,
                                                 quant_type="nf4")
            if bias:
                layer.bias = torch.nn.Parameter(child.bias.data.to(placement.dtype), requires_grad=False)
            setattr(module, name, layer)
        else:
            _quantize_linear_layers(child, placement)
