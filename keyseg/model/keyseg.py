"""KeySegModel: LLaVA (CLIP + projector + causal LM) + SAM, with [SEG] and [KEY] tokens.

A batch holds B images and R >= B query rows; rows offsets[i]:offsets[i+1] ask about image i.
Forward, in the order of the code below:
  1. CLIP patch features of each image (hidden_states[vision_feature_layer], CLS dropped),
     projected to the LM width and spliced in place of the single <image> token of each
     of the image's rows.
  2. The LM runs on those embeddings. The embedding of a [SEG] or [KEY] token is the
     last-layer hidden state at the position just BEFORE it (the state that predicts the
     token), passed through text_hidden_fcs (-> 256).
  3. The [SEG] embeddings of each image are fused with its [KEY] embedding(s)
     (KeywordSegFusion; in inference each query row with its own) and become SAM's sparse
     prompts, one mask per [SEG].
  4. SAM's mask decoder predicts low-resolution logits, upsampled to SAM's input square,
     cropped to the resized (unpadded) image and upsampled to the original size.
  5. Losses: the LM's cross-entropy on the answer, BCE + Dice on the masks and the keyword
     alignment loss; each returned on its own and as the weighted total.
The parts and their attribute names mirror the published checkpoints (docs/checkpoints.md),
so that `keyseg.model.loading` can map weights onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, SamConfig, SamModel

from keyseg.model.config import KeySegConfig
from keyseg.model.fusion import KeywordSegFusion
from keyseg.model.losses import keyword_alignment_loss, mask_losses
from keyseg.model.params import apply_trainability
from keyseg.model.tokens import IGNORE_INDEX, IMAGE_TOKEN_INDEX, add_special_tokens

SizeLike = Sequence[int] | torch.Tensor


def build_projector(kind: str, vision_hidden: int, llm_hidden: int) -> nn.Module:
    """LLaVA's projector: one Linear ("linear") or Linear-GELU-Linear ("mlp2x_gelu")."""
    if kind == "linear":
        return nn.Linear(vision_hidden, llm_hidden)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_hidden, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden))
    raise ValueError(f"unknown projector {kind!r}")


def build_sam_config(sam_kwargs: dict) -> SamConfig:
    """SamConfig from keyword dicts; the mask decoder's LayerNorm eps defaults to 1e-5.

    transformers' default is 1e-6, but the original SAM two-way transformer uses LayerNorm's
    default 1e-5, and published masks differ measurably with 1e-6.
    """
    kwargs = {key: dict(value) if isinstance(value, dict) else value for key, value in sam_kwargs.items()}
    kwargs.setdefault("mask_decoder_config", {}).setdefault("layer_norm_eps", 1e-5)
    return SamConfig(**kwargs)


def _trains(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def _as_pair(size: SizeLike) -> tuple[int, int]:
    height, width = (int(value) for value in size)
    return height, width


@dataclass
class SplicedInputs:
    """LM inputs after the <image> token of every row was replaced by P patch features."""

    inputs_embeds: torch.Tensor  # (R, T + P - 1, h)
    attention_mask: torch.Tensor  # (R, T + P - 1)
    labels: torch.Tensor | None  # (R, T + P - 1), -100 on the patch positions
    token_ids: torch.Tensor  # (R, T + P - 1), the placeholder -200 on the patch positions
    image_position: int | None  # column of <image> in every original row = first patch column; None: rows differ
    image_columns: list[int]  # that column per row


class KeySegModel(nn.Module):
    def __init__(self, config: KeySegConfig):
        """Random-init parts from `config`, cast to `config.dtype`. Use `from_config` to also
        add the special tokens; weights are loaded by `keyseg.model.loading`."""
        super().__init__()
        self.config = config

        vision_config = CLIPVisionConfig(**config.vision)
        if vision_config.image_size != config.clip_image_size:
            raise ValueError(f"clip_image_size {config.clip_image_size} != CLIP image_size {vision_config.image_size}")
        self.vision_tower = CLIPVisionModel(vision_config)

        llm_kwargs = dict(config.llm)
        if "model_type" not in llm_kwargs:
            raise ValueError('config.llm needs a "model_type" (e.g. "llama")')
        llm_config = AutoConfig.for_model(llm_kwargs.pop("model_type"), **llm_kwargs)
        self.llm = AutoModelForCausalLM.from_config(llm_config, attn_implementation="sdpa")
        hidden = self.llm.get_input_embeddings().embedding_dim

        self.mm_projector = build_projector(config.projector, vision_config.hidden_size, hidden)

        self.sam = SamModel(build_sam_config(config.sam))
        if self.sam.config.vision_config.image_size != config.sam_image_size:
            raise ValueError(f"sam_image_size {config.sam_image_size} != SAM image_size "
                             f"{self.sam.config.vision_config.image_size}")
        prompt_dim = self.sam.config.prompt_encoder_config.hidden_size
        if prompt_dim != config.out_dim:
            raise ValueError(f"out_dim {config.out_dim} != SAM prompt embedding size {prompt_dim}")

        out = config.out_dim
        # A ModuleList of one block: the published key names are text_hidden_fcs.0.{0,2}.*
        self.text_hidden_fcs = nn.ModuleList([
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=False), nn.Linear(hidden, out), nn.Dropout(0.0))
        ])
        self.keyword_fusion = KeywordSegFusion(out, config.fusion_slots, residual=config.fusion == "keyseg_residual")
        self.embedding_table_proj = nn.Linear(hidden, out)  # vocabulary -> 256 for the keyword loss
        self.keyword_text_proj = nn.Linear(hidden, out)  # shipped in the release, unused in its forward

        self.to(config.torch_dtype)

    # ----------------------------------------------------------------------------------------
    # construction helpers
    # ----------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: KeySegConfig, tokenizer) -> "KeySegModel":
        """A random-init model whose LM knows the special tokens, frozen as `config` says.

        `config` is copied; the model's copy records the token ids and the new vocab size.
        """
        model = cls(KeySegConfig.from_dict(config.to_dict()))
        if model.config.new_module_init == "normal":
            # transformers 4.31's _init_weights for what the release adds to LISA-7B-v1.
            std = model.llm.config.initializer_range
            added = (model.keyword_fusion, model.embedding_table_proj, model.keyword_text_proj)
            with torch.no_grad():
                for layer in (m for module in added for m in module.modules() if isinstance(m, nn.Linear)):
                    layer.weight.normal_(0.0, std)
                    layer.bias.zero_()
        model.setup_tokenizer(tokenizer)
        apply_trainability(model)
        if model.config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    def setup_tokenizer(self, tokenizer) -> dict[str, int]:
        """Add the special tokens to `tokenizer`, resize the LM's embeddings to match and
        record the token ids in `self.config`.

        New rows of the input embeddings and of the lm_head are drawn from N(0, the LM's
        initializer_range), biases 0, as transformers 4.31's `resize_token_embeddings` does
        for the release (its `_init_weights`; transformers 5 would start them at the mean
        row). Loading a checkpoint with fewer rows keeps these rows.
        """
        token_ids = add_special_tokens(tokenizer)
        old_rows, new_rows = self.llm.get_input_embeddings().num_embeddings, len(tokenizer)
        if old_rows != new_rows:
            self.llm.resize_token_embeddings(new_rows, mean_resizing=False)
        embeddings, lm_head = self.llm.get_input_embeddings(), self.llm.get_output_embeddings()
        if new_rows > old_rows and embeddings.weight.device.type != "meta":
            std = self.llm.config.initializer_range
            untied_head = lm_head is not None and lm_head.weight is not embeddings.weight
            with torch.no_grad():
                for layer in [embeddings] + ([lm_head] if untied_head else []):  # 4.31's order
                    fresh = torch.empty(new_rows - old_rows, layer.weight.shape[1], device=layer.weight.device)
                    layer.weight[old_rows:] = fresh.normal_(0.0, std).to(layer.weight.dtype)
                    if getattr(layer, "bias", None) is not None:
                        layer.bias[old_rows:] = 0
        self.config.llm["vocab_size"] = len(tokenizer)
        for name, value in token_ids.items():
            setattr(self.config, name, value)
        return token_ids

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations of the LM (and of SAM's encoder when it trains) in backward.

        Non-reentrant checkpointing works when the checkpointed block's inputs do not
        require grad (a frozen embedding table under LoRA).
        """
        kwargs = {"use_reentrant": False}
        self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        if _trains(self.sam.vision_encoder):
            self.sam.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.mm_projector.parameters()).dtype

    # ----------------------------------------------------------------------------------------
    # the steps of forward
    # ----------------------------------------------------------------------------------------

    def encode_images_clip(self, images_clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, C, C) -> projected patch features (B, P, h)."""
        # A frozen tower needs no graph; skipping it saves the activations' memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trains(self.vision_tower)):
            outputs = self.vision_tower(images_clip.to(self.dtype), output_hidden_states=True)
            features = outputs.hidden_states[self.config.vision_feature_layer][:, 1:]  # drop CLS
        return self.mm_projector(features)

    def splice_image_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              labels: torch.Tensor | None, row_features: torch.Tensor) -> SplicedInputs:
        """Replace the <image> placeholder (-200) of every row by that row's P patch features.

        A segmentation prompt has <image> at the start of its first user turn, so it sits in
        the same column of every such row and the splice is three concatenations. A VQA
        conversation can hold it in a later turn (LISA's VQADataset moves it to the front of
        whichever turn mentions it): such a batch is spliced row by row, as LLaVA's
        `prepare_inputs_labels_for_multimodal` does; every row still grows by P - 1.
        """
        is_image = input_ids == IMAGE_TOKEN_INDEX
        if not bool((is_image.sum(1) == 1).all()):
            raise ValueError("every row needs exactly one <image> placeholder (a conversation whose <image> lies "
                             "beyond the text limit loses it to truncation)")
        columns = is_image.int().argmax(1)
        rows, patches = row_features.shape[:2]
        embeds = self.llm.get_input_embeddings()(input_ids.clamp(min=0))
        row_features = row_features.to(embeds.dtype)
        shared = bool((columns == columns[0]).all())
        p = int(columns[0])

        def splice(tensor: torch.Tensor, inserted: torch.Tensor) -> torch.Tensor:
            if shared:
                return torch.cat([tensor[:, :p], inserted, tensor[:, p + 1:]], dim=1)
            return torch.stack([torch.cat([tensor[row, :c], inserted[row], tensor[row, c + 1:]])
                                for row, c in enumerate(columns.tolist())])

        def filled(tensor: torch.Tensor, fill: int) -> torch.Tensor:
            return splice(tensor, tensor.new_full((rows, patches), fill))

        return SplicedInputs(
            inputs_embeds=splice(embeds, row_features),
            attention_mask=filled(attention_mask, 1),
            labels=filled(labels, IGNORE_INDEX) if labels is not None else None,
            token_ids=filled(input_ids, IMAGE_TOKEN_INDEX),
            image_position=p if shared else None,
            image_columns=columns.tolist(),
        )

    def token_embeddings(self, hidden: torch.Tensor, token_ids: torch.Tensor, token_id: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (N, out_dim) of every occurrence of `token_id`, and the row of each.

        The hidden state that represents a token is the one at the position before it.
        Occurrences come in row-major order: row by row, left to right.
        """
        is_token = token_ids == token_id
        if bool(is_token[:, 0].any()):
            raise ValueError("a special token in the first column has no preceding hidden state")
        selected = hidden[:, :-1][is_token[:, 1:]]
        rows = is_token.nonzero()[:, 0]
        return self.text_hidden_fcs[0](selected), rows

    def fuse_keywords(self, seg_per_image: list[torch.Tensor], key_per_image: list[torch.Tensor]
                      ) -> list[torch.Tensor]:
        """The sparse prompts of each group: its [SEG] embeddings, fused with its [KEY] ones.

        A group without a [KEY] embedding is fused too: the release's fusion then attends
        over nothing (a zero context, see keyseg.model.fusion), it does not pass the [SEG]
        embeddings through. With fusion "none" every group keeps its [SEG] embeddings.
        """
        if self.config.fusion == "none":
            return list(seg_per_image)
        return [self.keyword_fusion(seg, keys) if len(seg) else seg
                for seg, keys in zip(seg_per_image, key_per_image)]

    def encode_images_sam(self, images_sam: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> SAM image embeddings (B, 256, E, E)."""
        size = self.config.sam_image_size
        if tuple(images_sam.shape[-2:]) != (size, size):
            raise ValueError(f"SAM input must be {size}x{size} (padded), got {tuple(images_sam.shape[-2:])}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trains(self.sam.vision_encoder)):
            return self.sam.vision_encoder(images_sam.to(self.dtype)).last_hidden_state

    def decode_masks(self, image_embeddings: torch.Tensor, prompts_per_image: list[torch.Tensor]
                     ) -> list[torch.Tensor]:
        """Low-resolution mask logits (N_i, 4E, 4E) per image, one mask per prompt.

        Each prompt is one sparse token; the dense prompt is SAM's "no mask" embedding
        broadcast over the embedding grid (no mask input), a single mask per prompt.
        """
        _, channels, height, width = image_embeddings.shape
        positional = self.sam.get_image_wide_positional_embeddings()
        no_mask = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, channels, 1, 1)
        dense = no_mask.expand(1, channels, height, width)
        low_res = []
        for index, prompts in enumerate(prompts_per_image):
            if len(prompts) == 0:
                low_res.append(image_embeddings.new_zeros((0, 4 * height, 4 * width)))
                continue
            masks, _ = self.sam.mask_decoder(
                image_embeddings=image_embeddings[index:index + 1],
                image_positional_embeddings=positional,
                sparse_prompt_embeddings=prompts.to(image_embeddings.dtype).view(1, len(prompts), 1, channels),
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            low_res.append(masks[0, :, 0])  # (1, N, 1, 4E, 4E) -> (N, 4E, 4E)
        return low_res

    def postprocess_masks(self, low_res: torch.Tensor, resize: SizeLike, original_size: SizeLike) -> torch.Tensor:
        """(N, 4E, 4E) logits -> (N, H, W) float32 logits at the original image size.

        Upsample to SAM's padded input square, crop the padding away (the image occupies the
        top-left `resize` = (h', w')), upsample to `original_size` = (H, W).
        """
        size = self.config.sam_image_size
        masks = low_res.float().unsqueeze(1)
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        resized_h, resized_w = _as_pair(resize)
        masks = masks[..., :resized_h, :resized_w]
        masks = F.interpolate(masks, _as_pair(original_size), mode="bilinear", align_corners=False)
        return masks[:, 0]

    # ----------------------------------------------------------------------------------------
    # forward
    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        images_sam: torch.Tensor,
        images_clip: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        offsets: Sequence[int] | torch.Tensor | None = None,
        masks: Sequence[torch.Tensor] | None = None,
        resize: Sequence[SizeLike] | None = None,
        original_size: Sequence[SizeLike] | None = None,
        keyword_ids: torch.Tensor | None = None,
        inference: bool = False,
        fusion_by_row: bool | None = None,
        image_features: torch.Tensor | None = None,
        sam_embeddings: torch.Tensor | None = None,
    ) -> dict:
        """Run the model on B images and R query rows.

        images_sam (B, 3, S, S) padded SAM inputs; images_clip (B, 3, C, C); input_ids,
        attention_mask, labels (R, T) from `tokenize_conversations`; offsets (B + 1) with
        rows offsets[i]:offsets[i+1] belonging to image i (default: one row per image);
        masks: B uint8 tensors (Q_i, H_i, W_i), 1 = target, 255 = ignore, Q_i = number of
        [SEG] tokens in image i's rows; resize: B (h', w') SAM resize sizes (default (S, S));
        original_size: B (H, W) (default: resize); keyword_ids (R,) first sub-token id of
        each row's keyword, -100 for none; fusion_by_row: fuse each row's [SEG] with that
        row's [KEY] only (default: in inference) instead of with every [KEY] of the image;
        image_features (B, P, h) / sam_embeddings (B, 256, E, E): the images' encodings when
        already computed (`encode_images_clip` / `encode_images_sam`), to reuse them.

        Returns a dict with
          pred_masks: B float32 logits (Q_i, H_i, W_i);
          seg_embeddings (N_seg, 256) before fusion, prompt_embeddings: B fused (Q_i, 256);
          key_embeddings (N_key, 256); seg_rows / key_rows: the query row of each;
        and unless `inference`: loss, ce, bce, dice, key (float32 scalars; a term whose
        inputs are missing is 0).
        """
        config = self.config
        missing = [name for name in ("seg_token_id", "key_token_id") if getattr(config, name) is None]
        if missing:
            raise ValueError(f"config.{missing[0]} is unset: build with from_config or call setup_tokenizer")
        num_images, num_rows = images_sam.shape[0], input_ids.shape[0]
        offsets = list(range(num_rows + 1)) if offsets is None else [int(value) for value in offsets]
        if len(offsets) != num_images + 1 or offsets[0] != 0 or offsets[-1] != num_rows or any(
                b < a for a, b in zip(offsets, offsets[1:])):
            raise ValueError(f"offsets {offsets} do not split {num_rows} rows over {num_images} images")
        if images_clip.shape[0] != num_images:
            raise ValueError(f"{images_clip.shape[0]} CLIP images but {num_images} SAM images")
        size = config.sam_image_size
        resize = [(size, size)] * num_images if resize is None else [_as_pair(r) for r in resize]
        original_size = resize if original_size is None else [_as_pair(s) for s in original_size]
        if len(resize) != num_images or len(original_size) != num_images:
            raise ValueError("resize and original_size need one entry per image")
        device = input_ids.device
        row_image = torch.repeat_interleave(torch.arange(num_images, device=device),
                                            torch.tensor(offsets, device=device).diff())

        # 1. image features into the token sequence
        if image_features is None:
            image_features = self.encode_images_clip(images_clip)
        spliced = self.splice_image_features(input_ids, attention_mask, labels, image_features[row_image])

        # 2. the LM and the [SEG]/[KEY] embeddings
        compute_ce = not inference and spliced.labels is not None
        lm_outputs = self.llm(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            labels=spliced.labels if compute_ce else None,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = lm_outputs.hidden_states[-1]  # after the final norm
        seg_embeddings, seg_rows = self.token_embeddings(hidden, spliced.token_ids, config.seg_token_id)
        key_embeddings, key_rows = self.token_embeddings(hidden, spliced.token_ids, config.key_token_id)
        seg_image = row_image[seg_rows]
        seg_counts = torch.bincount(seg_image, minlength=num_images).tolist()
        if masks is not None:
            mask_counts = [len(mask) for mask in masks]
            if mask_counts != seg_counts:
                raise ValueError(f"masks per image {mask_counts} != [SEG] tokens per image {seg_counts} "
                                 "(was an answer truncated?)")

        # 3. keyword fusion: in training the [SEG]s of an image meet all of its [KEY]s (the
        # release); in inference each query row meets only its own, so no query's mask
        # depends on the other queries that share its batch.
        by_row = inference if fusion_by_row is None else fusion_by_row
        seg_group, key_group = (seg_rows, key_rows) if by_row else (seg_image, row_image[key_rows])
        groups = num_rows if by_row else num_images
        fused = self.fuse_keywords([seg_embeddings[seg_group == g] for g in range(groups)],
                                   [key_embeddings[key_group == g] for g in range(groups)])
        if by_row:
            fused = [torch.cat(fused[offsets[i]:offsets[i + 1]]) if offsets[i + 1] > offsets[i]
                     else seg_embeddings[:0] for i in range(num_images)]
        prompts_per_image = fused

        # 4-5. SAM masks at the original resolution
        image_embeddings = self.encode_images_sam(images_sam) if sam_embeddings is None else sam_embeddings
        low_res = self.decode_masks(image_embeddings, prompts_per_image)
        pred_masks = [self.postprocess_masks(lr, r, o) for lr, r, o in zip(low_res, resize, original_size)]

        outputs = {
            "pred_masks": pred_masks,
            "seg_embeddings": seg_embeddings,
            "prompt_embeddings": prompts_per_image,
            "key_embeddings": key_embeddings,
            "seg_rows": seg_rows,
            "key_rows": key_rows,
        }
        if inference:
            return outputs

        # 6. losses, all float32
        zero = hidden.new_zeros((), dtype=torch.float32)
        ce = lm_outputs.loss.float() if compute_ce else zero
        if masks is not None:
            bce, dice = mask_losses(pred_masks, [mask.to(device) for mask in masks], config.loss_ignore_255)
        else:
            bce = dice = zero
        if keyword_ids is not None and len(key_rows):
            projected_table = self.embedding_table_proj(self.llm.get_input_embeddings().weight)
            key = keyword_alignment_loss(key_embeddings, projected_table, keyword_ids.to(device)[key_rows],
                                         config.key_temperature, ignore_id=config.pad_token_id)
        else:
            key = zero
        loss = config.ce_weight * ce + config.bce_weight * bce + config.dice_weight * dice + config.key_weight * key
        outputs.update(loss=loss, ce=ce, bce=bce, dice=dice, key=key)
        return outputs

    # ----------------------------------------------------------------------------------------
    # the exported folder (keyseg.model.pretrained)
    # ----------------------------------------------------------------------------------------

    def save_pretrained(self, folder, tokenizer, **card_inputs):
        """Write this model (LoRA merged) and `tokenizer` as an exported folder; `card_inputs`
        (train_config, data_provenance, export_info, eval_metrics, base_model) go to
        `keyseg.model.pretrained.save_pretrained`."""
        from keyseg.model.pretrained import save_pretrained

        return save_pretrained(self, tokenizer, folder, **card_inputs)

    @classmethod
    def from_pretrained(cls, folder, device: str = "cpu") -> "KeySegModel":
        """The model of an exported folder, in eval mode; its tokenizer comes with
        `keyseg.model.pretrained.load_pretrained`."""
        from keyseg.model.pretrained import load_pretrained

        return load_pretrained(folder, device)[0]
