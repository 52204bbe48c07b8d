"""Which parameters train: freezing flags, LoRA adapters, and a parameter table.

The recipe freezes the CLIP tower, the projector, SAM's image encoder and prompt encoder;
it trains LoRA adapters on the LM's q_proj and v_proj, the lm_head and embed_tokens, SAM's
mask decoder and text_hidden_fcs. The paper's method also trains the fusion and the
keyword loss's vocabulary projection; the release keeps both at their initial values and
puts LoRA adapters on the fusion's self-attention q_proj/v_proj instead (ha-erim/KeySeg
finetune.py:262-314; docs/presets.md). Every flag lives in KeySegConfig;
`apply_trainability` can be called any number of times and always gives the same result
for the same config.
"""

from __future__ import annotations

from torch import nn

LORA_MARKER = "lora_"

# (row name, attribute path) in the order the table prints them.
COMPONENTS = [
    ("vision_tower", "vision_tower"),
    ("mm_projector", "mm_projector"),
    ("llm", "llm"),
    ("sam.vision_encoder", "sam.vision_encoder"),
    ("sam.prompt_encoder", "sam.prompt_encoder"),
    ("sam.shared_image_embedding", "sam.shared_image_embedding"),
    ("sam.mask_decoder", "sam.mask_decoder"),
    ("text_hidden_fcs", "text_hidden_fcs"),
    ("keyword_fusion", "keyword_fusion"),
    ("embedding_table_proj", "embedding_table_proj"),
    ("keyword_text_proj", "keyword_text_proj"),
]


def _is_lora(name: str) -> bool:
    return LORA_MARKER in name


def apply_trainability(model, config=None) -> None:
    """Set requires_grad on every parameter from the config's train_* flags (and LoRA).

    `config` defaults to `model.config`. LoRA adapter weights always train when present;
    `keyword_text_proj` never does (no forward uses it).
    """
    config = model.config if config is None else config
    model.requires_grad_(False)
    model.vision_tower.requires_grad_(config.train_vision_tower)
    model.mm_projector.requires_grad_(config.train_projector)
    model.sam.vision_encoder.requires_grad_(config.train_sam_encoder)
    model.sam.prompt_encoder.requires_grad_(config.train_prompt_encoder)
    # The positional encoding of SAM's prompts; transformers ties the prompt encoder's copy
    # to this one, so it belongs to the prompt encoder.
    model.sam.shared_image_embedding.requires_grad_(config.train_prompt_encoder)
    model.sam.mask_decoder.requires_grad_(config.train_mask_decoder)
    model.text_hidden_fcs.requires_grad_(config.train_text_hidden_fcs)
    model.keyword_fusion.requires_grad_(config.train_fusion)
    model.embedding_table_proj.requires_grad_(config.train_embedding_table_proj)
    model.keyword_text_proj.requires_grad_(False)

    for name, parameter in model.llm.named_parameters():
        parameter.requires_grad_(config.train_llm or _is_lora(name))
    embed_tokens = model.llm.get_input_embeddings()
    lm_head = model.llm.get_output_embeddings()
    embed_tokens.requires_grad_(config.train_llm or config.train_embed_tokens)
    if lm_head is not None:
        tied = lm_head.weight is embed_tokens.weight
        # Tied weights are one tensor: it trains when either flag asks for it.
        lm_head.requires_grad_(config.train_llm or config.train_lm_head or (tied and config.train_embed_tokens))
    for name, parameter in model.keyword_fusion.named_parameters():
        if _is_lora(name):
            parameter.requires_grad_(True)


def lora_target_names(module: nn.Module, targets) -> list[str]:
    """Full names of the Linear layers inside `module` (the LM, or the fusion) whose last
    name part is in `targets`.

    Resolving to full names inside one module means LoRA can never land on SAM's or CLIP's
    layers of the same name (both have q_proj/v_proj).
    """
    targets = set(targets)
    return [name for name, layer in module.named_modules()
            if isinstance(layer, nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def apply_lora(model, config=None):
    """Add LoRA adapters (r, alpha, dropout, targets from the config) to the LM and, with
    `lora_fusion`, to the fusion.

    Does nothing when lora_r is 0. The LM is wrapped with peft (its parameter names gain
    peft's prefixes); the fusion's Linear layers are replaced in place (their weights become
    `<name>.base_layer.weight`). Load weights and add tokens before. Re-applies the
    trainability flags afterwards, since peft freezes everything but the adapters.
    """
    from peft import LoraConfig, PeftModel, get_peft_model, inject_adapter_in_model

    config = model.config if config is None else config
    if config.lora_r <= 0:
        return model
    if isinstance(model.llm, PeftModel) or any(_is_lora(name) for name, _ in model.named_parameters()):
        raise ValueError("the model already has LoRA adapters")
    settings = dict(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, bias="none")
    targets = lora_target_names(model.llm, config.lora_targets)
    if not targets:
        raise ValueError(f"no Linear module named {list(config.lora_targets)} in the LM")
    fusion_targets = lora_target_names(model.keyword_fusion, config.lora_targets) if config.lora_fusion else []
    if config.lora_fusion and not fusion_targets:
        raise ValueError(f"lora_fusion: no Linear module named {list(config.lora_targets)} in the fusion")
    model.llm = get_peft_model(model.llm, LoraConfig(target_modules=targets, task_type="CAUSAL_LM", **settings))
    if fusion_targets:
        inject_adapter_in_model(LoraConfig(target_modules=fusion_targets, **settings), model.keyword_fusion)
    apply_trainability(model, config)
    return model


def merge_lora(model):
    """Fold every LoRA adapter into its base weights (LM and fusion); the config then says
    lora_r = 0, so the merged model is built again without adapters."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()
    adapted = [(name, module) for name, module in model.keyword_fusion.named_modules() if isinstance(module, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.keyword_fusion.get_submodule(parent_name) if parent_name else model.keyword_fusion
        setattr(parent, child, module.get_base_layer())
    model.config.lora_r = 0
    return model


def _resolve(model, path: str) -> nn.Module | None:
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def parameter_table(model) -> list[tuple[str, int, int]]:
    """(component, trainable, total) parameter counts; the rows partition the model.

    The LM's LoRA adapters get their own row ("llm (LoRA)"); anything outside the named
    components lands in "other", so the totals always add up to the model's.
    """
    counted: set[int] = set()
    rows = []
    for label, path in COMPONENTS:
        module = _resolve(model, path)
        if module is None:
            continue
        groups = {label: [0, 0], f"{label} (LoRA)": [0, 0]}
        for name, parameter in module.named_parameters():
            if id(parameter) in counted:
                continue  # tied weights are counted once
            counted.add(id(parameter))
            group = groups[f"{label} (LoRA)" if _is_lora(name) else label]
            group[0] += parameter.numel() if parameter.requires_grad else 0
            group[1] += parameter.numel()
        if groups[label][1]:  # e.g. SAM's shared embedding is counted with the prompt encoder it is tied to
            rows.append((label, *groups[label]))
        if groups[f"{label} (LoRA)"][1]:
            rows.append((f"{label} (LoRA)", *groups[f"{label} (LoRA)"]))
    other = [p for p in model.parameters() if id(p) not in counted]
    if other:
        rows.append(("other", sum(p.numel() for p in other if p.requires_grad), sum(p.numel() for p in other)))
    return rows


def print_parameter_table(model, console=None) -> None:
    """Print `parameter_table(model)` with a total row, using rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if console is None else console
    table = Table(title="KeySeg parameters")
    table.add_column("component")
    table.add_column("trainable", justify="right")
    table.add_column("total", justify="right")
    table.add_column("% trainable", justify="right")
    rows = parameter_table(model)
    for label, trainable, total in rows:
        table.add_row(label, f"{trainable:,}", f"{total:,}", f"{100 * trainable / max(total, 1):.2f}")
    trainable, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    table.add_row("total", f"{trainable:,}", f"{total:,}", f"{100 * trainable / max(total, 1):.2f}", style="bold")
    console.print(table)
