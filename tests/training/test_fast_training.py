"""The training compute path (toolkit.training.compute): the fast loss equals the full one, frozen towers skip
autograd without changing anything that learns, and the data order stays a pure function of (seed, step).

Real tiny models of every family (tests.helpers.tiny.build_tiny_model) with real PEFT LoRA on them; no mocks.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.helpers.tiny import MODELS, build_tiny_model, family_of, tiny_inputs, tiny_structure
from toolkit import AllocationSpec, Budget, Ratio, allocate
from toolkit.training.compute import (
    GATHERED_FAMILIES,
    frozen_components,
    gathers_logits,
    skip_frozen_backward,
    training_loss,
)


def _batch_of_two(key: str, model) -> dict:
    """Two rows of the family's tiny inputs with different labelled spans; row 1 ends in a padded position."""
    one = tiny_inputs(key, model)
    batch = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in one.items()}
    ids = batch.pop("decoder_input_ids", batch["input_ids"])  # encoder-decoder: labels are the decoder's
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]           # answer + EOS at the end of row 0
    labels[1, -4:-1] = ids[1, -4:-1]       # a three-token answer in row 1, whose last position is padding
    batch["attention_mask"][1, -1] = 0
    batch["labels"] = labels
    return batch


def _lora_model(key: str):
    model = build_tiny_model(key)
    # init_lora_weights=False: B is random too, so lora_A gets non-zero gradients to compare
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0)
    return get_peft_model(model, config)


def _loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


def _full(model, batch):
    return model(**batch).loss


@pytest.mark.parametrize("key", MODELS)
def test_fast_loss_and_lora_gradients_equal_the_full_computation(key):
    model = _lora_model(key)
    batch = _batch_of_two(key, model)
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: head_rows.append(out.shape[:-1].numel()))
    full_loss, full_grads = _loss_and_grads(model, _full, batch)
    fast_loss, fast_grads = _loss_and_grads(model, training_loss, batch)
    hook.remove()

    assert torch.isfinite(full_loss)
    torch.testing.assert_close(fast_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert set(fast_grads) == set(full_grads) and len(full_grads) > 0
    for name, grad in full_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    if family_of(key) in GATHERED_FAMILIES and key != "blip-2+flan-t5":
        assert gathers_logits(model)
        labelled = int((batch["labels"][:, 1:] != -100).sum())
        assert head_rows[1] == labelled < head_rows[0], "the fast path must run the LM head on labelled positions only"
    else:  # encoder-decoder: the full computation, same loss
        assert not gathers_logits(model)
        assert head_rows[1] == head_rows[0]


def test_gathered_loss_counts_every_labelled_token_like_the_model():
    """A row without labels and uneven spans: the mean is over labelled tokens, not rows (as transformers)."""
    model = _lora_model("llava")
    batch = _batch_of_two("llava", model)
    batch["labels"][0] = -100
    torch.testing.assert_close(training_loss(model, batch).detach(), model(**batch).loss.detach(), rtol=1e-5, atol=1e-6)


def test_misaligned_head_input_falls_back_to_the_full_loss():
    """Labels that do not line up with what the head sees (an architecture that prepends tokens) -> full loss."""
    model = _lora_model("llava")
    batch = _batch_of_two("llava", model)
    full = model(**batch).loss.detach()
    short = dict(batch, labels=batch["labels"][:, 1:])
    with pytest.raises(Exception):  # noqa: B017 - the model's own shape error, never a silently different loss
        training_loss(model, short)
    assert not gathers_logits(model)  # remembered: this model takes the full path from now on
    torch.testing.assert_close(training_loss(model, batch).detach(), full)


def _allocated_lora(key: str, tiny_dirs, ratio: str):
    structure = tiny_structure(tiny_dirs, key)
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse(ratio), budget=Budget("rank", 4)))
    model = build_tiny_model(key)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()  # what --gradient-checkpointing and QLoRA do: every tower's input needs grad
    config = LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": 0.0, "init_lora_weights": False})
    return get_peft_model(model, config).train(), structure, allocation


@pytest.mark.parametrize("key", ["llava", "qwen2_vl"])
def test_vision_without_lora_runs_without_autograd_and_learns_the_same(key, tiny_dirs):
    model, structure, allocation = _allocated_lora(key, tiny_dirs, "0:1:1")
    batch = _batch_of_two(key, model)
    assert frozen_components(allocation) == {"vision"}
    projector = [m for m in structure.linears("projector")][0].name
    seen = []
    model.get_base_model().get_submodule(projector).register_forward_pre_hook(
        lambda m, a: seen.append(a[0].requires_grad))
    before_loss, before = _loss_and_grads(model, training_loss, batch)
    skipped = skip_frozen_backward(model, structure, allocation)
    after_loss, after = _loss_and_grads(model, training_loss, batch)

    assert skipped and all(not n.startswith("model.language_model") for n in skipped)
    assert seen[0] is True and seen[-1] is False, "the frozen tower's features must enter the projector detached"
    torch.testing.assert_close(after_loss, before_loss)
    assert set(after) == set(before)
    for name, grad in before.items():
        torch.testing.assert_close(after[name], grad, rtol=1e-5, atol=1e-7)


def test_trained_vision_keeps_its_graph(tiny_dirs):
    model, structure, allocation = _allocated_lora("llava", tiny_dirs, "1:4:1")
    assert frozen_components(allocation) == set()
    assert skip_frozen_backward(model, structure, allocation) == []


def test_projector_and_vision_frozen_with_language_only(tiny_dirs):
    model, structure, allocation = _allocated_lora("llava", tiny_dirs, "0:0:1")
    skipped = skip_frozen_backward(model, structure, allocation)
    assert frozen_components(allocation) == {"vision", "projector"}
    assert {"model.vision_tower", "model.multi_modal_projector"} <= set(skipped)
    loss, grads = _loss_and_grads(model, training_loss, _batch_of_two("llava", model))
    assert torch.isfinite(loss) and grads and all("language_model" in n for n in grads)


# ------------------------------------------------------------------------------------- length-grouped order


def _spread(order, lengths, steps, per_step):
    """Mean over steps of (longest - shortest) length in the step: the padding a step computes on."""
    spans = []
    for s in range(steps):
        ls = [lengths[order.index(k)] for k in range(s * per_step, (s + 1) * per_step)]
        spans.append(max(ls) - min(ls))
    return sum(spans) / len(spans)


def test_grouped_order_is_a_pure_permutation_per_epoch_with_less_padding():
    from toolkit.training.order import DataOrder

    n, per_step = 1000, 8
    lengths = [(i * 7919) % 23 + 5 for i in range(n)]  # 5..27 tokens
    grouped = DataOrder(n=n, seed=3, per_step=per_step, lengths=lengths)
    plain = DataOrder(n=n, seed=3, per_step=per_step)
    for epoch in (0, 1):
        assert sorted(grouped.epoch(epoch)) == list(range(n))  # every record once per epoch
    assert grouped.epoch(0) != grouped.epoch(1)
    again = DataOrder(n=n, seed=3, per_step=per_step, lengths=lengths)
    assert [again.index(k) for k in range(1500, 1600)] == [grouped.index(k) for k in range(1500, 1600)]  # (seed, k)
    assert DataOrder(n=n, seed=4, per_step=per_step, lengths=lengths).epoch(0) != grouped.epoch(0)
    assert _spread(grouped, lengths, 100, per_step) < 0.25 * _spread(plain, lengths, 100, per_step)
    # the steps are not sorted through the epoch: the first and last steps' lengths overlap
    first = [lengths[i] for i in grouped.epoch(0)[:200]]
    assert max(first) - min(first) > 15


def test_token_lengths_read_texts_without_images(tmp_path):
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.training.order import token_lengths

    data = load_vqa("synthetic:shapes?n=20&seed=1", split="train")
    assert data.texts() == [(r.question, r.answer) for r in data]

    from transformers import AutoProcessor

    from toolkit.training.demo import demo_model_dir

    fmt = VQAFormatter(AutoProcessor.from_pretrained(demo_model_dir()), "llava")
    lengths = token_lengths(fmt, data)
    assert lengths == [len(fmt.tokenizer(f"{q} {a}", add_special_tokens=False)["input_ids"]) for q, a in data.texts()]
    assert len(set(lengths)) > 1


@pytest.mark.slow  # one subprocess that builds, trains and 4-bit-reloads the demo preset
def test_gpu_bench_script_runs_on_a_tiny_preset():
    """bench/bench_train_gpu.py's whole path (arms, ratios, the nf4 reload) on the demo preset on this CPU."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / "bench_train_gpu.py"), "--preset", "demo",
                           "--batch-size", "2", "--text-tokens", "6", "--steps", "2", "--rounds", "1"],
                          capture_output=True, text=True, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    assert len(lines) == 1, "the script prints exactly one JSON line"
    doc = json.loads(lines[0])
    assert doc["tokens_per_sample"] == 1 + 16 + 6 + 3  # BOS, demo's 16 image tokens, text, answer
    for arm in ("peft", "engine", "qlora_batch1_gc"):
        assert doc[arm]["tokens_per_s"] > 0 and doc[arm]["loss_first"] > 0
    assert doc["ratio_tokens_per_s"] > 0 and doc["trainable"] > 0


def test_folded_lora_dropout_is_dropout_then_linear_with_the_same_gradients():
    from toolkit.training.compute import _dropout_linear

    p, x0, w0 = 0.3, torch.randn(2, 5, 16), torch.randn(4, 16)
    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    torch.manual_seed(3)
    out = _dropout_linear().apply(x, w, p)
    out.square().sum().backward()
    # the reference draws the same mask from the same generator state, then drops and multiplies with autograd
    xr, wr = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    torch.manual_seed(3)
    mask = torch.empty(x0.shape, dtype=torch.bool).bernoulli_(1 - p)
    ref = torch.nn.functional.linear(xr * mask / (1 - p), wr)
    ref.square().sum().backward()
    assert 0 < (~mask).sum() < mask.numel()  # some elements were dropped, not all
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad)


def test_folding_keeps_parameters_eval_outputs_and_draws_what_peft_draws():
    import copy

    from toolkit.training.compute import compact_lora_dropout

    key = "llava"
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.1)
    plain = get_peft_model(build_tiny_model(key), config)
    model = copy.deepcopy(plain)
    batch = _batch_of_two(key, model)
    keys = sorted(model.state_dict())
    n = compact_lora_dropout(model)
    assert n == sum(1 for name, _ in model.named_modules() if name.endswith("lora_A.default"))  # every one
    assert sorted(model.state_dict()) == keys  # the saved adapter is the same set of tensors
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, plain(**batch).logits)  # no dropout in eval mode
    model.train(), plain.train()
    torch.manual_seed(0)
    loss, grads = _loss_and_grads(model, training_loss, batch)
    torch.manual_seed(0)
    ref_loss, ref_grads = _loss_and_grads(plain, training_loss, batch)  # PEFT's own nn.Dropout modules
    # on the CPU the byte mask is drawn from the generator exactly as F.dropout's float mask: the same step
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and any("lora_A" in k for k in grads)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k])
    torch.manual_seed(1)
    assert training_loss(model, batch).item() != pytest.approx(loss.item(), abs=1e-6)  # a fresh mask per call
    assert compact_lora_dropout(get_peft_model(build_tiny_model(key), LoraConfig(r=4, target_modules="all-linear",
                                                                                lora_dropout=0.0))) == 0
