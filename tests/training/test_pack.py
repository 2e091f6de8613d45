"""Packed training (toolkit.training.pack): an arm trained in a pack equals the same arm trained alone.

For every tiny family of tests/helpers/tiny_checkpoints.py, three arms that differ in allocation (so in per-module ranks),
seed, learning rate and batch size train once in a pack and once each alone with `engine.train`, in fp32 with
LoRA dropout on: every step's loss and every final adapter tensor agree within 1e-5, and the run folders hold the
same files and the same cmba.json settings. BLIP-2 (OPT and Flan-T5) runs the sequential fallback (its frozen
Q-Former and language model draw their own dropout masks); the others are fused. Further tests: the fallback
asked for on a fusable family is equivalent too; a fused pack calls each frozen Linear once per step on the
stacked rows of all arms; arms of different lengths; a stopped pack resumes to the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CHECKPOINTS = ("llava", "llava_next", "blip-2", "blip-2+flan-t5", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
               "paligemma", "llava_onevision", "internvl", "gemma3")
SEQUENTIAL = {"blip-2", "blip-2+flan-t5"}
"""families whose frozen base draws dropout masks in training: the pack runs their arms one after another"""
DATA = "synthetic:shapes?n=24&seed=3"
ARMS = (("1:2:1", 0, 2e-3, 4), ("2:1:1", 1, 1e-3, 3), ("0:1:2", 2, 4e-3, 2))
"""(ratio, seed, learning rate, batch size) of the three arms"""
NO_PROJECTOR = {"1:2:1": "1:0:1", "2:1:1": "2:0:1", "0:1:2": "0:0:1"}
"""Gemma 3's projector holds no Linear layer"""
STEPS = 3
TOL = 1e-5


def arm_settings(folder: Path, out: Path, key: str, arm: tuple, **extra):
    from toolkit.training.settings import TrainSettings

    ratio, seed, lr, batch = arm
    ratio = NO_PROJECTOR[ratio] if key == "gemma3" else ratio
    return TrainSettings(model=str(folder), dataset=DATA, ratio=ratio, budget_rank=4, seed=seed, lr=lr,
                         batch_size=batch, max_steps=STEPS, warmup_ratio=0.0, checkpoint_every=2, progress=False,
                         precision="fp32", output=str(out / f"{ratio.replace(':', '-')}-s{seed}"), **extra)


_SOLO: dict = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One CPU thread: the machine is shared, and tiny models gain nothing from two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def solo_runs(checkpoints, key: str, root: Path) -> list[Path]:
    """The three arms trained alone by the engine (once per family per session)."""
    from toolkit.training.engine import train

    if key not in _SOLO:
        outs = []
        for arm in ARMS:
            s = arm_settings(checkpoints(key), root / f"solo-{key}", key, arm)
            train(s, log=lambda m: None)
            outs.append(Path(s.output))
        _SOLO[key] = outs
    return _SOLO[key]


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_run(pack_out: Path, solo_out: Path) -> tuple[float, float]:
    """Same loss curve and adapter within TOL, same files and settings; returns the largest differences."""
    got, want = losses(pack_out), losses(solo_out)
    assert len(got) == len(want) == STEPS
    loss_diff = max(abs(a - b) for a, b in zip(got, want))
    a, b = adapter(pack_out), adapter(solo_out)
    assert set(a) == set(b) and a
    weight_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert loss_diff <= TOL, (got, want)
    assert weight_diff <= TOL, weight_diff
    assert sorted(p.name for p in pack_out.iterdir()) == sorted(p.name for p in solo_out.iterdir())
    assert json.loads((pack_out / "adapter_config.json").read_text()) == json.loads(
        (solo_out / "adapter_config.json").read_text())
    doc, ref = (json.loads((f / "cmba.json").read_text()) for f in (pack_out, solo_out))
    for part in ("allocation", "training", "dataset"):
        assert doc[part] == ref[part], part
    return loss_diff, weight_diff


@pytest.mark.training
@pytest.mark.parametrize("key", CHECKPOINTS)
def test_pack_arm_equals_its_single_run(checkpoints, key, tmp_path_factory):
    from toolkit.training.pack import train_pack

    root = tmp_path_factory.mktemp(f"pack-{key.replace('+', '-')}")
    solo = solo_runs(checkpoints, key, tmp_path_factory.mktemp("solo"))
    result = train_pack([arm_settings(checkpoints(key), root, key, arm) for arm in ARMS], log=lambda m: None)
    if key in SEQUENTIAL:
        assert result.mode == "sequential" and ("dropout" in result.reason or "encoder-decoder" in result.reason)
    else:
        assert result.mode == "fused", result.reason
    ranks = {json.dumps(d["allocation"]["components"], sort_keys=True) for d in result.docs}
    assert len(ranks) == len(ARMS)  # three different allocations
    for doc, solo_out in zip(result.docs, solo):
        diffs = assert_same_run(root / doc["name"], solo_out)
        print(f"{key} {doc['name']}: loss diff {diffs[0]:.2e}, weight diff {diffs[1]:.2e} ({result.mode})")


@pytest.mark.training
def test_sequential_fallback_equals_single_runs(checkpoints, tmp_path_factory):
    from toolkit.training.pack import train_pack

    root = tmp_path_factory.mktemp("pack-seq")
    solo = solo_runs(checkpoints, "llava", tmp_path_factory.mktemp("solo"))
    result = train_pack([arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS], fuse=False,
                        log=lambda m: None)
    assert result.mode == "sequential" and result.reason == "asked not to fuse"
    for doc, solo_out in zip(result.docs, solo):
        assert_same_run(root / doc["name"], solo_out)


@pytest.mark.training
def test_fused_pack_runs_each_frozen_linear_once_per_step_on_all_rows(checkpoints, tmp_path, monkeypatch):
    """Every adapted layer's frozen weight is called once per step on the 4 + 3 + 2 stacked rows of the three
    arms, while the arms' LoRA on the same layer have different ranks."""
    from toolkit.training import fused_lora
    from toolkit.training.pack import train_pack

    calls: list[tuple[int, int]] = []
    original = fused_lora._lora_forward

    def spy(layer, fused, component, peft_forward, convert_first, x, *args, **kwargs):
        if fused.layout is not None:
            calls.append((id(layer), int(x.shape[0])))
        return original(layer, fused, component, peft_forward, convert_first, x, *args, **kwargs)

    monkeypatch.setattr(fused_lora, "_lora_forward", spy)
    base_calls: list[int] = []
    keep: dict = {}
    result = train_pack([arm_settings(checkpoints("llava"), tmp_path, "llava", arm) for arm in ARMS],
                        log=lambda m: None, keep=keep)
    assert result.mode == "fused"
    layers = {layer for layer, _ in calls}
    assert len(calls) == STEPS * len(layers)  # one call per layer per step (no accumulation here)
    assert {rows for _, rows in calls} == {4 + 3 + 2}  # LLaVA's vision tower and language model: one row per sample

    model = keep["model"]
    q_proj = next(m for n, m in model.named_modules() if n.endswith("language_model.layers.0.self_attn.q_proj"))
    ranks = {name: q_proj.lora_A[name].weight.shape[0] for name in keep["adapters"] if name in q_proj.lora_A}
    assert len(set(ranks.values())) > 1, ranks  # per-module ranks differ between the arms
    # the frozen Linear itself, in one more stacked forward: one call over all rows
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.training.compute import training_losses

    fmt = VQAFormatter.for_model(keep["processor"], model.get_base_model())
    records = list(load_vqa(DATA, split="train"))
    batches = [fmt.train_batch(records[:4]), fmt.train_batch(records[4:7]), fmt.train_batch(records[7:9])]
    arms = [_Arm(name) for name in keep["adapters"]]
    stacked, layout = fused_lora.stack_batches(batches, arms, pad_id=fmt.tokenizer.pad_token_id,
                                               config=model.get_base_model().config)
    handle = q_proj.base_layer.register_forward_hook(lambda m, a, out: base_calls.append(int(a[0].shape[0])))
    fused = q_proj.forward.args[1]
    with torch.no_grad(), fused.running(layout):
        packed = training_losses(model, stacked, layout.rows)
    handle.remove()
    assert base_calls == [9]
    with torch.no_grad():  # each arm's loss on the stack equals its own batch through PEFT's forward
        for name, batch, loss in zip(keep["adapters"], batches, packed):
            model.set_adapter(name)
            torch.testing.assert_close(loss, model(**batch).loss, rtol=1e-5, atol=1e-6)


class _Arm:
    """What the fused layers read of an arm (dropout off: evaluation mode draws nothing)."""

    def __init__(self, adapter: str):
        self.adapter, self.dropout = adapter, 0.0


@pytest.mark.training
def test_interrupted_pack_resumes_every_arm_to_its_single_run(checkpoints, tmp_path_factory):
    """`stop_after` checkpoints every arm (its adapter, optimizer and RNG stream) and raises Interrupted; the pack
    resumed from those checkpoints ends where the uninterrupted single runs end."""
    from toolkit.outcomes import Interrupted
    from toolkit.training.pack import train_pack

    root = tmp_path_factory.mktemp("pack-resume")
    solo = solo_runs(checkpoints, "llava", tmp_path_factory.mktemp("solo"))
    with pytest.raises(Interrupted):
        train_pack([arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS], stop_after=1,
                   log=lambda m: None)
    assert all(len(losses(root / Path(s.output).name)) == 1 for s in
               [arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS])
    result = train_pack([arm_settings(checkpoints("llava"), root, "llava", arm, resume=True) for arm in ARMS],
                        log=lambda m: None)
    assert result.mode == "fused"
    for doc, solo_out in zip(result.docs, solo):
        assert_same_run(root / doc["name"], solo_out)


@pytest.mark.training
def test_stacks_of_at_most_stack_rows_rows_equal_single_runs(checkpoints, tmp_path_factory):
    """`stack_rows=5` cuts the 4 + 3 + 2 rows into the stacks [4] and [3, 2]: still each arm's single run."""
    from toolkit.training.pack import train_pack

    root = tmp_path_factory.mktemp("pack-stacks")
    solo = solo_runs(checkpoints, "llava", tmp_path_factory.mktemp("solo"))
    result = train_pack([arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS], stack_rows=5,
                        log=lambda m: None)
    assert result.mode == "fused"
    for doc, solo_out in zip(result.docs, solo):
        assert_same_run(root / doc["name"], solo_out)


@pytest.mark.training
def test_out_of_memory_splits_the_stack_and_redoes_the_step(checkpoints, tmp_path_factory, monkeypatch):
    """A forward of more than 5 rows runs out of memory (as a GPU would, raised where the model runs): the step is
    undone, the 4 + 3 + 2 rows split into stacks of at most 4 rows ([4], [3], [2]), the step redone, and every
    arm still ends as its single run. One arm per forward that still runs out of memory is the job's failure."""
    from toolkit.outcomes import OutOfMemory
    from toolkit.training import compute
    from toolkit.training.pack import train_pack

    real = compute.training_losses
    seen: list[int] = []

    def small_device(model, batch, rows):
        seen.append(sum(rows))
        if sum(rows) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(model, batch, rows)

    monkeypatch.setattr(compute, "training_losses", small_device)
    root = tmp_path_factory.mktemp("pack-oom")
    solo = solo_runs(checkpoints, "llava", tmp_path_factory.mktemp("solo"))
    lines: list[str] = []
    result = train_pack([arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS], log=lines.append)
    assert result.mode == "fused"
    assert seen[0] == 9 and seen[1:4] == [4, 3, 2] and set(seen[4:]) <= {4, 3, 2}  # split once, then kept
    assert any("out of memory at step 1 with 9 rows" in line and "at most 4 rows" in line for line in lines), lines
    for doc, solo_out in zip(result.docs, solo):
        assert_same_run(root / doc["name"], solo_out)

    def no_memory(model, batch, rows):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(compute, "training_losses", no_memory)
    with pytest.raises(OutOfMemory, match="one arm per forward"):
        train_pack([arm_settings(checkpoints("llava"), tmp_path_factory.mktemp("pack-oom2"), "llava", arm)
                    for arm in ARMS], log=lambda m: None)


@pytest.mark.training
def test_an_arm_that_leaves_is_checkpointed_and_the_others_end_as_alone(checkpoints, tmp_path_factory):
    """`leave` names the second arm after the first step: it leaves the pack with a checkpoint of step 1 and no
    finished run folder; the other two end exactly as their single runs; resumed later, the arm that left ends as
    its single run too. An arm named before the pack starts is not trained at all."""
    from toolkit import runs
    from toolkit.training.pack import train_pack

    root = tmp_path_factory.mktemp("pack-leave")
    solo = solo_runs(checkpoints, "llava", tmp_path_factory.mktemp("solo"))
    settings = [arm_settings(checkpoints("llava"), root, "llava", arm) for arm in ARMS]
    gone = Path(settings[1].output)
    lines: list[str] = []

    def leave(s):
        if Path(s.output) == gone and (gone / "metrics.jsonl").exists() and (gone / "metrics.jsonl").stat().st_size:
            return "cancelled by user"
        return None

    result = train_pack(settings, log=lines.append, leave=leave)
    assert result.left == {gone.name: "cancelled by user"} and result.docs[1] is None
    assert not (gone / "cmba.json").exists() and runs.latest_checkpoint(gone).name.endswith("1")
    assert len(losses(gone)) == 1
    assert any(f"{gone.name} leaves the pack at step 1/{STEPS}: cancelled by user (checkpointed)" in x for x in lines)
    for k in (0, 2):
        assert_same_run(root / result.docs[k]["name"], solo[k])

    again = train_pack([arm_settings(checkpoints("llava"), root, "llava", arm, resume=True) for arm in ARMS],
                       log=lambda m: None)
    assert again.arms == 1 and again.left == {}
    assert_same_run(gone, solo[1])

    before = tmp_path_factory.mktemp("pack-leave-before")
    early = train_pack([arm_settings(checkpoints("llava"), before, "llava", arm) for arm in ARMS],
                       log=lambda m: None, leave=lambda s: "cancelled by user" if s.seed == 0 else None)
    assert early.arms == 2 and list(early.left.values()) == ["cancelled by user"] and early.docs[0] is None
    assert not any(before.glob("*-s0/metrics.jsonl"))
