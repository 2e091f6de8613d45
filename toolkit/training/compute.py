"""Only the compute the study needs: what the training loop runs instead of a generic causal-LM step.

    loss = training_loss(peft_model, batch)        # == peft_model(**batch).loss, vocabulary logits on answers only
    frozen = skip_frozen_backward(peft_model, structure, allocation)   # no autograd through LoRA-free towers
    attn = attention_implementation(device, precision)                  # "flash_attention_2" where installed, else "sdpa"

**Logits only where the loss is.** VQA labels cover the 1-3 answer tokens (and EOS) after a prompt of hundreds
(LLaVA-1.5: 576 image tokens), yet a causal-LM forward projects every position onto the vocabulary (32k+
columns) and keeps that tensor, its fp32 copy, its log-softmax and their gradients. `training_loss` gathers the
hidden states of the positions whose *next* token is labelled just before `lm_head` (a forward pre-hook on the
model's output embeddings, so the family's own forward runs unchanged, soft-capping included) and takes the
mean cross-entropy over those tokens: the same value as transformers' shifted `ForCausalLMLoss` (mean over
labelled tokens), with the same gradients, at a fraction of the memory. It applies to the decoder-only
families tested against the full loss (`GATHERED_FAMILIES`); encoder-decoder language models (BLIP-2 with
Flan-T5), unknown architectures and a model whose head sees a sequence that is not aligned with the labels
fall back to `model(**batch).loss`: never a different loss.

**No backward where nothing learns.** With vision weight 0 the vision tower holds no LoRA, but gradient
checkpointing and QLoRA (`enable_input_require_grads`) make every sub-model's input embeddings require grad,
so a full graph is built through the frozen tower. `skip_frozen_backward` runs the largest submodules that hold
only frozen components' layers (the vision tower; with projector weight 0 as well, the projector too) under
`torch.no_grad`, so their features enter the trained part detached. The language model is never skipped: the
loss is there.
"""

from __future__ import annotations

IGNORE = -100
GATHERED_FAMILIES = frozenset({"llava", "llava_next", "blip-2", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
                               "paligemma"})
"""model_types whose LM head is fed hidden states aligned with `labels` (tested in tests/test_fast_training.py)"""

_GATHER_ATTR = "_cmba_gathers_logits"


def gathers_logits(model) -> bool:
    """Whether `training_loss` computes the vocabulary logits on labelled positions only for this model."""
    cached = getattr(model, _GATHER_ATTR, None)
    if cached is not None:
        return cached
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    ok = (config is not None and getattr(config, "model_type", None) in GATHERED_FAMILIES
          and not getattr(config, "is_encoder_decoder", False) and not getattr(text, "is_encoder_decoder", False)
          and getattr(config, "use_decoder_only_language_model", True)
          and _output_head(model) is not None)
    _remember(model, ok)
    return ok


def _remember(model, value: bool) -> None:
    object.__setattr__(model, _GATHER_ATTR, value)  # a plain attribute, not a submodule or buffer


def _unwrapped(model):
    """The model inside a DistributedDataParallel wrapper (which has no config or output embeddings)."""
    import torch

    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _output_head(model):
    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return head if hasattr(head, "register_forward_pre_hook") else None


def training_loss(model, batch: dict):
    """The mean cross-entropy over labelled tokens of `batch` (next-token shift), as `model(**batch).loss`.

    `batch` holds `labels` with -100 on positions that are not trained; where `gathers_logits(model)`, the LM
    head runs on the N labelled positions only ([1, N, hidden] -> [1, N, vocab]) instead of [B, T, vocab].
    """
    import torch

    labels = batch.get("labels")
    inner = _unwrapped(model)  # under torchrun the loop holds a DDP wrapper: the hook goes on the inner head
    if labels is None or not gathers_logits(inner):
        return model(**batch).loss
    logits, targets, _, misaligned = _labelled_logits(model, inner, batch)
    if misaligned is not None:  # this architecture feeds its head something else: the full computation from now on
        _remember(inner, False)
        return model(**batch).loss
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)


def _labelled_logits(model, inner, batch: dict):
    """One forward whose LM head runs on the labelled positions only: (logits [N, vocab] in fp32 like
    ForCausalLMLoss, targets [N], target_mask [B, T-1], None), rows in order; or (None, None, None, the shape the
    head saw) where this architecture feeds its head something not aligned with the labels."""
    labels = batch["labels"]
    target_mask = labels[:, 1:] != IGNORE  # [B, T-1]: hidden state t predicts token t+1
    seen: dict = {}

    def gather(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("input")
        if hidden is None or hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(labels.shape):
            seen["misaligned"] = None if hidden is None else tuple(hidden.shape)
            return None
        picked = hidden[:, :-1][target_mask.to(hidden.device)].unsqueeze(0)  # [1, N, hidden]
        return (picked, *args[1:]), kwargs

    handle = _output_head(inner).register_forward_pre_hook(gather, with_kwargs=True)
    try:
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    finally:
        handle.remove()
    if "misaligned" in seen:
        return None, None, None, seen["misaligned"] or "no input"
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()  # [N, vocab]
    return logits, labels[:, 1:][target_mask].to(logits.device), target_mask, None


def training_losses(model, batch: dict, rows: list[int]) -> list:
    """`training_loss` of each group of consecutive rows of `batch` (the arms of a pack, toolkit.training.pack),
    from one forward: group g's loss is the mean cross-entropy over its own labelled tokens (next-token shift), as
    `training_loss` of its rows alone. Where `gathers_logits(model)` the LM head runs once on every group's
    labelled positions; other decoder-only models (whose `model(**batch).loss` is transformers' shifted mean,
    `ForCausalLMLoss`) get full logits, cut per group. Raises ValueError for an encoder-decoder model and where the
    head is fed something not aligned with the labels."""
    import torch

    from toolkit.data.families import is_encoder_decoder

    labels = batch["labels"]
    inner = _unwrapped(model)
    if sum(rows) != labels.shape[0]:
        raise ValueError(f"rows {rows} do not cover the batch's {labels.shape[0]} rows")
    if not gathers_logits(inner):
        if is_encoder_decoder(inner.config):
            raise ValueError("an encoder-decoder model's loss is its decoder's, not cut per labelled position here")
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits  # [B, T, V]
        losses, row = [], 0
        for n_rows in rows:
            shifted = logits[row:row + n_rows, :-1].float()
            losses.append(torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]),
                                                            labels[row:row + n_rows, 1:].reshape(-1).to(logits.device),
                                                            ignore_index=IGNORE))
            row += n_rows
        return losses
    logits, targets, target_mask, misaligned = _labelled_logits(model, inner, batch)
    if misaligned is not None:
        raise ValueError(f"the LM head sees {misaligned}, not the labels' {tuple(labels.shape)}")
    counts = [int(c) for c in target_mask.sum(dim=1).tolist()]
    losses, row, first = [], 0, 0
    for n_rows in rows:
        n = sum(counts[row:row + n_rows])
        losses.append(torch.nn.functional.cross_entropy(logits[first:first + n], targets[first:first + n],
                                                        ignore_index=IGNORE))
        row, first = row + n_rows, first + n
    return losses


# ------------------------------------------------------------------------------------- frozen components


def frozen_components(allocation) -> set[str]:
    """Components whose modules need no autograd graph: vision without LoRA, and the projector too when
    neither it nor vision holds any (gradients flow from the language model back to the projector only to
    reach a trained projector or vision tower)."""
    trained = {m.component for m in allocation.modules}
    frozen = set()
    if "vision" not in trained:
        frozen.add("vision")
        if "projector" not in trained:
            frozen.add("projector")
    return frozen


def skip_frozen_backward(peft_model, structure, allocation) -> list[str]:
    """Run the largest submodules made of frozen components only under `torch.no_grad`; returns their names.

    A submodule qualifies when it holds at least one Linear layer, every Linear layer in it belongs to a frozen
    component (or is one of that component's dead layers), and none of its parameters is trainable.
    """
    import functools

    import torch

    frozen = frozen_components(allocation)
    if not frozen:
        return []
    frozen_linears = {m.name for m in structure.modules if m.component in frozen}
    frozen_linears |= {m.name for m in structure.dead}
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    linears_under: dict[str, list[str]] = {}
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.Linear) or hasattr(module, "base_layer"):
            parts = name.split(".")
            for i in range(len(parts) + 1):
                linears_under.setdefault(".".join(parts[:i]), []).append(name)
    chosen: list[str] = []
    for name, module in base.named_modules():
        if any(name == c or name.startswith(c + ".") for c in chosen) or name not in linears_under:
            continue
        if not name or isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):  # containers are never called
            continue
        if any(p.requires_grad for p in module.parameters()):
            continue
        if all(n in frozen_linears for n in linears_under[name]):
            module.forward = functools.partial(_no_grad_forward, module.forward)
            chosen.append(name)
    return chosen


def _no_grad_forward(forward, *args, **kwargs):
    import torch

    with torch.no_grad():
        return forward(*args, **kwargs)


# ------------------------------------------------------------------------------------- kernels


def attention_implementation(device, precision: str) -> str:
    """FlashAttention-2 on a CUDA GPU in 16-bit when the `flash_attn` package is installed, else PyTorch SDPA."""
    import importlib.util

    if device.type == "cuda" and precision in ("bf16", "fp16") and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


# ------------------------------------------------------------------------------------- LoRA dropout


def _dropout_linear():
    import torch

    class DropoutLinear(torch.autograd.Function):
        """`F.linear(dropout(x), A)` keeping the input and a 1-byte mask for backward instead of PEFT's dropped copy
        and its float mask (x is shared by the modules that read the same hidden state: q, k and v; gate and up)."""

        @staticmethod
        def forward(ctx, x, weight, p: float):
            mask = torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(1.0 - p)  # [.., in]
            scale = 1.0 / (1.0 - p)
            ctx.save_for_backward(x, mask, weight)
            ctx.scale = scale
            return torch.nn.functional.linear(x * mask * scale, weight)  # [.., r]; the dropped copy is freed here

        @staticmethod
        def backward(ctx, grad):
            x, mask, weight = ctx.saved_tensors
            grad_x = grad_w = None
            if ctx.needs_input_grad[0]:
                grad_x = (grad @ weight) * mask * ctx.scale
            if ctx.needs_input_grad[1]:
                dropped = (x * mask * ctx.scale).reshape(-1, x.shape[-1])  # recomputed: [N, in]
                grad_w = grad.reshape(-1, grad.shape[-1]).t() @ dropped  # [r, in]
            return grad_x, grad_w, None

    return DropoutLinear


def compact_lora_dropout(peft_model) -> int:
    """Fold each LoRA dropout into its `lora_A` with `DropoutLinear` (the same dropout: each element kept with
    probability 1-p and scaled by 1/(1-p), a fresh mask per module and call); returns how many were folded.

    Only for training without autocast (fp32): under autocast PEFT's own modules stay. On CPU `F.dropout` keeps a
    float mask and the dropped copy of every adapted module's input for backward, the largest memory cost of a
    LoRA step after the logits (bench/RESULTS.md, issue #17). Parameters and saved adapters are unchanged; in eval
    mode `lora_A` is a plain linear map.
    """
    import functools

    import torch

    fn = _dropout_linear()

    def forward(linear, p, x):
        if linear.training and torch.is_grad_enabled():
            return fn.apply(x, linear.weight, p)
        return torch.nn.functional.linear(x, linear.weight, linear.bias)

    folded = 0
    for module in peft_model.modules():
        drops, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(drops, torch.nn.ModuleDict) or not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            linear = lora_a[name] if name in lora_a else None
            if (not isinstance(drop, torch.nn.Dropout) or drop.p <= 0 or not isinstance(linear, torch.nn.Linear)
                    or linear.bias is not None):
                continue
            drops[name] = torch.nn.Identity()
            linear.forward = functools.partial(forward, linear, float(drop.p))
            folded += 1
    return folded
