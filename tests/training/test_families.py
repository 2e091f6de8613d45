"""Every family loads, batches, trains and evaluates as a user's downloaded checkpoint would.

Each family is a tiny real checkpoint (tests/helpers/tiny_checkpoints.py: random weights, the family's own processor
classes, a tokenizer trained here, the family's chat template) written once per session. The fast tests load
it the way `train` does and compare the batch builder's tokens with the family's processor; the `training`
ones train it, reload the adapter with plain `PeftModel.from_pretrained`, evaluate it and read the answers;
one drives `toolkit train` + `toolkit evaluate` through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.data.sources import load_vqa
from toolkit.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ("llava", "llava_next", "blip-2", "blip-2+flan-t5", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
               "paligemma", "llava_onevision", "internvl", "gemma3")
PROCESSOR = {"llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor", "blip-2": "Blip2Processor",
             "blip-2+flan-t5": "Blip2Processor", "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
             "idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor", "paligemma": "PaliGemmaProcessor",
             "llava_onevision": "LlavaOnevisionProcessor", "internvl": "InternVLProcessor", "gemma3": "Gemma3Processor"}
ANSWER_FORMAT = {  # what follows the prompt in the family's own format: (text before the answer, end tokens)
    "llava": (" ", ["</s>"]), "llava_next": (" ", ["</s>"]), "blip-2": (" ", ["</s>"]),
    "qwen2_vl": ("", ["<|im_end|>"]), "qwen2_5_vl": ("", ["<|im_end|>"]),  # `<|im_start|>assistant\n` + answer
    "idefics3": (" ", ["<end_of_utterance>"]), "smolvlm": (" ", ["<end_of_utterance>"]),  # `Assistant: ` + answer
    "paligemma": ("", ["<eos>"]),  # the suffix after the processor's `\n`, no word-boundary marker
    "blip-2+flan-t5": ("", ["</s>"]),  # decoder labels: T5's own encoding of the answer
    "llava_onevision": ("", ["<|im_end|>"]), "internvl": ("", ["<|im_end|>"]),  # Qwen2 turns
    "gemma3": ("", ["<end_of_turn>", "<eos>"]),  # the template's end of turn, then EOS
}
DATA = "synthetic:shapes?n=16&types=exist"
"""yes/no questions: 20 steps teach every tiny model the answer format"""
LEARNING_RATE = {"paligemma": "3e-2"}
"""the tiny random Gemma (embeddings tied to its output layer, which LoRA does not adapt) needs larger steps"""


def _load(folder: Path):
    from toolkit.calculator.structure import load_structure
    from toolkit.training.modeling import load_model

    structure = load_structure(str(folder))
    return load_model(structure, precision="fp32", quantize=None, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """key -> (model, processor) as `train` loads them, loaded once for the two tests below that only read them."""
    cache: dict[str, tuple] = {}

    def get(key: str):
        if key not in cache:
            cache[key] = _load(checkpoints(key))
        return cache[key]

    yield get
    cache.clear()


@pytest.mark.parametrize("key", CHECKPOINTS)
def test_checkpoint_loads_with_the_family_processor(loaded, key):
    from toolkit.training.processors import torchvision_works

    model, processor = loaded(key)
    assert type(processor).__name__ == PROCESSOR[key]
    if key in ("qwen2_vl", "qwen2_5_vl", "smolvlm", "llava_onevision", "internvl") and not torchvision_works():
        assert processor.video_processor is None  # images only: VQA needs no video processor
    assert model.config.model_type == key.split("+")[0]


@pytest.mark.parametrize("key", CHECKPOINTS)
def test_tokens_trained_are_the_family_processors(loaded, key):
    """A training row is the processor's encoding of prompt + answer in the family's format; its labels are
    the answer and end token; its prompt part is exactly the generation prompt."""
    from toolkit.data.prompting import VQAFormatter

    model, processor = loaded(key)
    fmt = VQAFormatter.for_model(processor, model)
    tok = processor.tokenizer
    records = list(load_vqa("synthetic:shapes?n=4&seed=5"))
    train, gen = fmt.train_batch(records), fmt.generation_batch(records)
    before, end = ANSWER_FORMAT[key]
    assert fmt.is_encoder_decoder == (key == "blip-2+flan-t5")
    assert {"input_ids", "attention_mask", "labels", "pixel_values"} <= set(train)
    for i, r in enumerate(records):
        labels = train["labels"][i]
        expected = tok(before + r.answer, add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(end)
        assert labels[labels != -100].tolist() == expected, tok.convert_ids_to_tokens(labels[labels != -100])
        assert tok.decode(labels[labels != -100], skip_special_tokens=True).strip() == r.answer
        prompt = gen["input_ids"][i][gen["attention_mask"][i].bool()].tolist()
        row = train["input_ids"][i][train["attention_mask"][i].bool()].tolist()
        if fmt.is_encoder_decoder:
            assert row == prompt  # the encoder reads the prompt; the answer is only on the decoder
            continue
        assert row == prompt + expected and (labels[:len(prompt)] == -100).all()
        # the same row as the processor makes for this one sample alone (padding changes nothing)
        if key == "paligemma":
            alone = processor(text=[fmt.prompt(r.question)], images=[r.image], suffix=[r.answer])["input_ids"]
        else:
            images = [[r.image]] if fmt.conventions.nest_images else [r.image]
            alone = processor(text=[fmt.prompt(r.question) + fmt.answer(r.question, r.answer)], images=images)["input_ids"]
        assert list(alone[0]) == row
    loss = model(**train).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("key", CHECKPOINTS)
@pytest.mark.training
def test_trains_reloads_and_answers(checkpoints, key, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from toolkit.cli import make_parser
    from toolkit.cli.train import settings_from_args
    from toolkit.data.prompting import VQAFormatter
    from toolkit.evaluation.evaluate import evaluate_adapter
    from toolkit.training.engine import train

    folder, out = checkpoints(key), tmp_path / "adapter"
    args = ["train", "--model", str(folder), "--dataset", DATA, "--ratio", "1:0:1" if key == "gemma3" else "1:2:1", "--budget-rank", "4",
            "--max-steps", "20", "--batch-size", "8", "--lr", LEARNING_RATE.get(key, "1e-2"), "--warmup-ratio", "0", "--no-progress",
            "--output", str(out)]
    keep = {}
    doc = train(settings_from_args(make_parser().parse_args(args)), keep=keep, log=lambda m: None)
    assert doc["result"]["steps"] == 20 and doc["base_model"]["model_type"] == key.split("+")[0]

    # plain PEFT reload on a fresh base reproduces the trained model's loss
    base = AutoModelForImageTextToText.from_pretrained(folder)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    batch = VQAFormatter.for_model(keep["processor"], reloaded).train_batch(list(load_vqa(DATA, split="validation"))[:4])
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).loss, keep["model"].eval()(**batch).loss, atol=1e-5)

    result = evaluate_adapter(out, DATA, split="validation", batch_size=8)
    predictions = [json.loads(line) for line in (Path(result["path"]) / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 16
    # decoded answers, not prompt remnants or empty strings (BLIP-2 Flan-T5 used to answer "" every time); after
    # 20 steps a tiny random model may still slip a stray word in, so most, not all, are yes / no
    answers = [p["prediction"] for p in predictions]
    assert all(answers) and sum(a in ("yes", "no") for a in answers) >= 12, answers
    assert result["scores"]["overall"] > 0


@pytest.mark.training
def test_cli_trains_and_evaluates_qwen2_vl(checkpoints, tmp_path):
    """`toolkit train` + `toolkit evaluate` in real subprocesses on the family that could not load its processor."""
    folder, out = checkpoints("qwen2_vl"), tmp_path / "qwen"
    env = {**os.environ, "CMBA_ADAPTERS_DIR": str(tmp_path / "adapters")}
    cli = [sys.executable, "-m", "toolkit"]
    r = subprocess.run([*cli, "train", "--model", str(folder), "--dataset", DATA, "--ratio", "1:4:1", "--budget-rank",
                        "4", "--max-steps", "3", "--batch-size", "4", "--no-progress", "--output", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([*cli, "evaluate", "--adapter", str(out), "--dataset", DATA, "--split", "validation", "--limit",
                        "4", "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["dataset"]["n"] == 4 and "overall" in doc["scores"]


@pytest.mark.slow  # python -m toolkit in subprocesses (torch imported in each): 11-23 s on 2 cores
def test_missing_processor_files_are_one_line(checkpoints, tmp_path):
    """A folder with config and weights but no tokenizer: one line naming what is missing, exit 2, no traceback."""
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(checkpoints("llava"), folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ModelLoadError, match="cannot load the processor of .* has no tokenizer") as err:
        _load(folder)
    assert "\n" not in str(err.value)
    r = subprocess.run([sys.executable, "-m", "toolkit", "train", "--model", str(folder), "--dataset", DATA,
                        "--ratio", "1:1:1", "--budget-rank", "4", "--max-steps", "1", "--no-progress", "--output", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "has no tokenizer (tokenizer.json" in r.stderr, r.stderr


def test_missing_weights_are_one_line(checkpoints, tmp_path):
    import shutil

    folder = tmp_path / "no-weights"
    shutil.copytree(checkpoints("smolvlm"), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load the weights of .* has no weights \\(model.safetensors") as err:
        _load(folder)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # python -m toolkit in subprocesses (torch imported in each): 11-23 s on 2 cores
def test_a_torchvision_that_does_not_import_is_hidden(checkpoints, tmp_path):
    """The PyPI torchvision next to a CPU torch fails on import (`operator torchvision::nms does not exist`),
    which breaks every transformers config. A package that fails the same way stands in for it here (the real
    wheel cannot be installed by a test); `import toolkit` hides it and Qwen2-VL's config and processor load."""
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    (site / "torchvision-0.28.0.dist-info").mkdir()
    (site / "torchvision-0.28.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    code = ("import sys, toolkit\n"
            "from toolkit.training.processors import load_processor, torchvision_problem\n"
            "toolkit.load_structure('qwen2-vl-2b')\n"
            "p = load_processor(sys.argv[1], revision=None, model_id='qwen')\n"
            "print(torchvision_problem(), '|', type(p).__name__, p.video_processor)\n")
    r = subprocess.run([sys.executable, "-c", code, str(checkpoints("qwen2_vl"))], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip() == "RuntimeError: operator torchvision::nms does not exist | Qwen2VLProcessor None"


def test_import_errors_name_the_missing_package():
    """transformers' own ImportError for a processor part (the video processor without torchvision) -> one line
    that names the package to install."""
    from toolkit.training.processors import load_error, torchvision_works

    if torchvision_works():
        pytest.skip("torchvision is installed and works here: its ImportError cannot occur")
    from transformers import Qwen2VLVideoProcessor

    with pytest.raises(ImportError) as raised:
        Qwen2VLVideoProcessor()
    message = str(load_error("processor", "qwen2-vl-2b", raised.value))
    assert "\n" not in message and "pip install torchvision" in message


# ------------------------------------------------------------------------------- presets people pilot on

PILOT_PRESETS = {  # preset -> (family, parameters of the published checkpoint as the Hub reports them)
    "smolvlm-500m": ("idefics3", 507e6), "smolvlm2-500m": ("smolvlm", 507e6), "qwen2.5-vl-3b": ("qwen2_5_vl", 3.75e9),
    "paligemma2-3b": ("paligemma", 3.03e9), "internvl3-1b": ("internvl", 938e6),
    "llava-onevision-0.5b": ("llava_onevision", 894e6), "gemma-3-4b": ("gemma3", 4.30e9),
}


@pytest.mark.parametrize("name", sorted(PILOT_PRESETS))
def test_pilot_presets_match_the_published_models(name):
    from toolkit import load_structure

    family, published = PILOT_PRESETS[name]
    s = load_structure(name)
    assert s.family == family and s.hub_id
    assert abs(s.total_params - published) / published < 0.005, f"{s.total_params:,}"
    assert s.linears("vision") and s.linears("language")
    assert bool(s.linears("projector")) == (family != "gemma3")


def test_gemma3_projector_is_refused_in_plain_words():
    from toolkit import load_structure
    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, Budget, Ratio
    from toolkit.errors import InputError

    s = load_structure("gemma-3-4b")
    with pytest.raises(InputError, match="Gemma 3's projector is a weight matrix .* cannot get a LoRA"):
        allocate(s, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    a = allocate(s, AllocationSpec(ratio=Ratio.parse("1:0:1"), budget=Budget("rank", 8)))
    assert a.total > 0 and not [m for m in a.modules if m.component == "projector"]


@pytest.mark.parametrize("key, overrides", [("internvl", {}), ("internvl", {"vision_feature_layer": -2}),
                                            ("llava_onevision", {}), ("gemma3", {})])
def test_pilot_dead_module_rules_match_the_gradient_probe(tmp_path, key, overrides):
    """The registry's dead modules of each new family are exactly the LoRA layers that get no gradient."""
    from tests.helpers.tiny import lora_gradients, tiny_config_dict, write_model_dir
    from toolkit import load_structure

    targets, silent = lora_gradients(key, **overrides)
    structure = load_structure(str(write_model_dir(tmp_path / key, {**tiny_config_dict(key), **overrides})))
    assert {m.name for m in structure.dead} == silent
    assert len(targets) > len(silent)
    if key != "internvl":  # SigLIP builds its pooling head: never read
        assert {"model.vision_tower.head.mlp.fc1"} <= silent
