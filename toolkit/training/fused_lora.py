"""The packed forward: K arms' LoRA adapters on one frozen base, their batches stacked through each frozen weight.

    fused = FusedLora(peft_model, components={"model.language_model.layers.0.self_attn.q_proj": "language", ...})
    stacked, layout = stack_batches([arm_batch(a) for a in arms], arms, pad_id=tok.pad_token_id, config=config)
    with fused.running(layout):                  # the arms of this batch, in row order
        losses = training_losses(peft_model, stacked, layout.rows)     # one loss per arm (toolkit.training.compute)
    sum(losses).backward()                       # each arm's LoRA gets exactly its own gradient

Each PEFT LoRA layer (and each `modules_to_save` wrapper) gets a forward that runs its frozen `base_layer` once on
the stacked batch, then adds each arm's own delta `lora_B(lora_A(dropout(x_k))) * scaling` on that arm's slice
(arms that do not target the layer add nothing; a fully trained module replaces its arm's slice). Rows of
different arms never mix inside these models (attention, normalisation and the image features are per row or per
image), so arm k's loss depends on its own rows and its own weights only, and the gradient of the summed losses
is each arm's own gradient.

**Slices.** A layer's input is cut along its first dimension by the unit that dimension counts: batch rows for the
language model and most vision towers, and for vision-tower and projector layers whatever the family's vision
path counts instead (`Layout.splits`): Qwen2-VL / Qwen2.5-VL patches (`image_grid_thw`, the patches of one
image stay contiguous through Qwen2.5-VL's window reordering) and merged patches, LLaVA-NeXT / OneVision anyres
crops (`image_sizes`), Idefics3 / SmolVLM real images (all-zero padding images are dropped by the model). A size
that matches no split, or two splits that cut differently, raises `FusionError` (the pack then runs its arms one
after another instead).

**Padding.** Arms' rows are right-padded to the longest text of the stack (attention mask 0, labels -100), which
changes no real token's result; language layers compute each arm's delta on its own length (`x[a:b, :T_k]`) so
that its dropout mask is drawn with exactly the shape it has in a single run.

**RNG.** Each arm owns its RNG stream (`RngStream`: the CPU generator's state, and the GPU's): the stream is
installed as the global generator around every draw the arm makes (its LoRA dropout), so the arm sees the masks
a single run with its seed would see, in the same order, whatever the other arms draw.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

IGNORE = -100
TEXT_KEYS = {"input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids"}
"""per-token batch fields: [B, T], right-padded to the stack's longest row"""
PAD = {"labels": IGNORE}
"""padding value of a per-token field (input_ids: the tokenizer's pad id; others 0)"""


class FusionError(Exception):
    """The arms' batches cannot be run as one stacked batch (the message says why)."""


# ------------------------------------------------------------------------------------- RNG streams


class RngStream:
    """One arm's generator states (CPU, and the current GPU's), swapped in as the global ones while it draws."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state() if self.cuda else None

    def copy(self) -> RngStream:
        other = object.__new__(RngStream)
        other.cuda, other.cpu_state, other.cuda_state = self.cuda, self.cpu_state.clone(), (
            None if self.cuda_state is None else self.cuda_state.clone())
        return other

    def restore(self, saved: RngStream) -> None:
        self.cpu_state, self.cuda_state = saved.cpu_state.clone(), (
            None if saved.cuda_state is None else saved.cuda_state.clone())

    @contextlib.contextmanager
    def installed(self):
        """The global generators are this stream's inside; the stream keeps what was drawn; nested use is a no-op."""
        import torch

        if _ACTIVE[0] is self:
            yield
            return
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state() if self.cuda else None
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state)
        previous, _ACTIVE[0] = _ACTIVE[0], self
        try:
            yield
        finally:
            _ACTIVE[0] = previous
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if self.cuda:
                self.cuda_state = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(outer_cuda)


_ACTIVE: list = [None]
"""the stream installed now (so an arm's own layers need no second swap inside its installed forward)"""


# ------------------------------------------------------------------------------------- layout of a stacked batch


@dataclass
class Layout:
    """Which rows (and vision units) of a stacked batch belong to which arm."""

    arms: list
    """the arms, in row order; each has `.adapter` (PEFT adapter name), `.rng` (RngStream) and `.dropout` (p)"""
    rows: list[int]
    """batch rows per arm"""
    text: list[int]
    """text length (input_ids width) of each arm's own batch"""
    width: int
    """text length of the stacked batch (the longest)"""
    splits: dict[str, list[int]] = field(default_factory=dict)
    """other units the vision path counts per arm: "pixels", "patches", "merged", "crops", "images\""""

    def cut(self, size: int, component: str) -> list[int]:
        """Per-arm counts that split a first dimension of `size` at a layer of `component`."""
        if len(self.arms) == 1:  # one arm's own batch: the whole input is its, whatever the layer counts
            return [size]
        found = [self.rows] if self.rows and sum(self.rows) == size else []
        if component != "language":
            found += [c for c in self.splits.values() if sum(c) == size]
        if not found:
            raise FusionError(f"a {component} layer sees {size} rows, which no per-arm count adds up to "
                              f"(rows {self.rows}, {self.splits})")
        if any(c != found[0] for c in found):
            raise FusionError(f"a {component} layer sees {size} rows, which two per-arm counts add up to "
                              f"differently ({found})")
        return found[0]


def _vision_splits(batches: list[dict], config) -> dict[str, list[int]]:
    """Per-arm counts of the units a family's vision path puts on a layer's first dimension."""
    splits: dict[str, list[int]] = {}
    pixels = [b.get("pixel_values") for b in batches]
    if all(p is not None and p.dim() in (2, 4) for p in pixels):  # one image (or patch) per first-dim entry
        splits["pixels"] = [int(p.shape[0]) for p in pixels]
    if all("image_grid_thw" in b for b in batches):  # Qwen2-VL / Qwen2.5-VL: patches of all images, concatenated
        patches = [int(b["image_grid_thw"].prod(dim=-1).sum()) for b in batches]
        merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", 1) ** 2
        splits["patches"], splits["merged"] = patches, [p // merge for p in patches]
    if all("image_sizes" in b for b in batches) and all(p is not None and p.dim() == 5 for p in pixels):
        splits["crops"] = [_anyres_crops(b["image_sizes"], config) for b in batches]
    if all(p is not None and p.dim() == 5 for p in pixels) and "image_sizes" not in batches[0]:
        # Idefics3 / SmolVLM: [B, images, C, H, W] flattened; all-zero (padding) images are dropped by the model
        splits["images"] = [int(((p == 0.0).sum(dim=(-1, -2, -3)) != p.shape[-3:].numel()).sum()) for p in pixels]
    return splits


def _anyres_crops(image_sizes, config) -> int:
    """LLaVA-NeXT / OneVision: crops the model keeps for these images (its own `image_size_to_num_patches`)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    return sum(int(image_size_to_num_patches(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                                             patch_size=config.vision_config.image_size)) for size in image_sizes)


def stack_batches(batches: list[dict], arms: list, *, pad_id: int, config) -> tuple[dict, Layout]:
    """The arms' batches as one: text fields right-padded to the longest and stacked, image fields concatenated
    (5-D pixel tensors padded with all-zero images / crops, which the models drop). Raises FusionError for a
    field it does not know how to stack."""
    import torch

    keys = set(batches[0])
    if any(set(b) != keys for b in batches):
        raise FusionError("the arms' batches hold different fields")
    width = max(int(b["input_ids"].shape[1]) for b in batches)
    out: dict = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if key in TEXT_KEYS:
            pad = pad_id if key == "input_ids" else PAD.get(key, 0)
            out[key] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1]), value=pad) for v in values])
        elif key in ("pixel_values", "pixel_attention_mask") and values[0].dim() == 5 - (key == "pixel_attention_mask"):
            most = max(int(v.shape[1]) for v in values)  # images (or crops) per row: pad with all-zero ones
            out[key] = torch.cat([torch.cat([v, v.new_zeros(v.shape[0], most - v.shape[1], *v.shape[2:])], dim=1)
                                  for v in values])
        elif key == "batch_num_images":  # LLaVA-OneVision: images per row
            out[key] = torch.cat(values) if hasattr(values[0], "shape") else [n for v in values for n in v]
        elif key in ("pixel_values", "image_grid_thw", "image_sizes"):
            if any(v.shape[1:] != values[0].shape[1:] for v in values):
                raise FusionError(f"the arms' {key} differ in shape ({[tuple(v.shape) for v in values]})")
            out[key] = torch.cat(values)
        else:
            raise FusionError(f"batch field '{key}' has no known stacking")
    layout = Layout(arms=list(arms), rows=[int(b["input_ids"].shape[0]) for b in batches],
                    text=[int(b["input_ids"].shape[1]) for b in batches], width=width,
                    splits=_vision_splits(batches, config))
    return out, layout


def single_layout(batch: dict, arm) -> Layout:
    """The layout of one arm's own batch (the sequential path: exactly a single run's forward)."""
    rows, width = int(batch["input_ids"].shape[0]), int(batch["input_ids"].shape[1])
    return Layout(arms=[arm], rows=[rows], text=[width], width=width)


# ------------------------------------------------------------------------------------- the fused layers


class FusedLora:
    """Installs the packed forward on every LoRA layer and `modules_to_save` wrapper of a multi-adapter PEFT model.

    Outside `running(layout)` the layers run PEFT's own forward (the active adapter), e.g. for evaluation.
    """

    def __init__(self, peft_model, *, components: dict[str, str]):
        import torch
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import ModulesToSaveWrapper

        self.layout: Layout | None = None
        self.calls = 0
        """base-layer calls made by fused layers (the test of fusion counts them)"""
        base = peft_model.get_base_model()
        self.layers = 0
        for name, module in base.named_modules():
            component = components.get(name, "language")
            if isinstance(module, LoraLayer) and isinstance(module, torch.nn.Module):
                if getattr(module, "lora_variant", None):
                    raise FusionError(f"{name}: LoRA variants (DoRA, ...) are not fused")
                convert_first = "bnb" in type(module).__module__  # PEFT's 4/8-bit layers cast the delta first
                module.forward = functools.partial(_lora_forward, module, self, component, module.forward, convert_first)
                self.layers += 1
            elif isinstance(module, ModulesToSaveWrapper):
                module.forward = functools.partial(_full_forward, module, self, component, module.forward)
                self.layers += 1

    @contextlib.contextmanager
    def running(self, layout: Layout):
        previous, self.layout = self.layout, layout
        try:
            yield
        finally:
            self.layout = previous

    def ranges(self, size: int, component: str) -> list[tuple]:
        """(arm, first row, end row) of each arm at a layer whose input's first dimension is `size`."""
        counts = self.layout.cut(size, component)
        out, start = [], 0
        for arm, n in zip(self.layout.arms, counts):
            out.append((arm, start, start + n))
            start += n
        return out


def _lora_forward(layer, fused: FusedLora, component: str, peft_forward, convert_first: bool, x, *args, **kwargs):
    import torch

    layout = fused.layout
    if layout is None:
        return peft_forward(x, *args, **kwargs)
    result = layer.base_layer(x, *args, **kwargs)  # the frozen weight: once, over every arm's rows
    fused.calls += 1
    dtype = result.dtype
    trim = component == "language" and x.dim() >= 3 and x.shape[1] == layout.width
    ranges = fused.ranges(x.shape[0], component)
    # one split of the input and one cat of the deltas: in backward the arms' gradients are views of one tensor,
    # where a slice per arm (or an in-place add per arm) would copy the whole tensor once per arm
    chunks = x.split([b - a for _, a, b in ranges]) if len(ranges) > 1 else [x]
    pieces, any_delta = [], False
    for (arm, _, _), length, chunk in zip(ranges, layout.text, chunks):
        name = arm.adapter
        if name not in layer.lora_A:
            pieces.append(None)
            continue
        if component == "language" and not trim and arm.dropout > 0 and length != layout.width:
            raise FusionError(f"a {component} layer's input {tuple(x.shape)} is not [rows, text, features]: cannot "
                              f"draw arm {name}'s dropout mask on its own positions")
        short = trim and length < layout.width
        lora_A, lora_B = layer.lora_A[name], layer.lora_B[name]
        xs = layer._cast_input_dtype(chunk[:, :length] if short else chunk, lora_A.weight.dtype)
        with arm.rng.installed() if arm.dropout > 0 else contextlib.nullcontext():
            delta = lora_B(lora_A(layer.lora_dropout[name](xs))) * layer.scaling[name]  # [rows_k, T_k, out]
        if convert_first:  # as PEFT's 4/8-bit layers: the delta in the output's dtype
            delta = delta.to(dtype)
        if short:  # zeros on the padding positions: result + 0 leaves them as they are
            delta = torch.nn.functional.pad(delta, (0, 0, 0, layout.width - length))
        pieces.append(delta)
        any_delta = True
    if not any_delta:
        return result
    like = next(p for p in pieces if p is not None)
    full = pieces[0] if len(pieces) == 1 else torch.cat(
        [p if p is not None else like.new_zeros((b - a, *like.shape[1:])) for p, (_, a, b) in zip(pieces, ranges)])
    return (result + full).to(dtype)  # as PEFT: the sum in the promoted type, cast back to the base's


def _full_forward(wrapper, fused: FusedLora, component: str, peft_forward, x, *args, **kwargs):
    layout = fused.layout
    if layout is None:
        return peft_forward(x, *args, **kwargs)
    result = wrapper.original_module(x, *args, **kwargs)
    fused.calls += 1
    for arm, a, b in fused.ranges(x.shape[0], component):
        if arm.adapter in wrapper.modules_to_save:  # the arm trains this module fully: its own copy on its rows
            own = wrapper.modules_to_save[arm.adapter](x[a:b], *args, **kwargs)
            if b - a == result.shape[0]:
                result = own
            else:
                result[a:b] = own
    return result
