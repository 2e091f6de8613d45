"""The offline demo VLM (preset `demo`): a tiny LLaVA with its own tokenizer and processor, pretrained here.

What it is: a real `LlavaForConditionalGeneration` (CLIP vision tower 64-wide x 4 layers, 2-layer MLP projector,
Llama decoder 128-wide x 4 layers, ~1.2 M parameters) whose word-level tokenizer and CLIP image processor are
built from code, so nothing is downloaded. `scripts/build_demo_model.py` pretrains it from a fixed seed on
part of the synthetic task (`synthetic:shapes` with only colour, shape and existence questions), then briefly on
every question family (100 steps: it has seen what a count or a position answer looks like, but gets few of them
right), and writes `toolkit/training/demo_model/`, which ships with the repository. Fine-tuning it with LoRA on
the full task then improves counting and positions steadily, seed after seed (a base that had never answered
with a number left each seed to discover those answers at its own step, and seeds spread 3-5 points).

What it is not: evidence about LLaVA-1.5-7B. It demonstrates the mechanics (budget-matched allocation,
training, jobs, evaluation, statistics, publishing) on a CPU in minutes; conclusions about real models need
real models and real data.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import ModelLoadError

DEMO_DIR = Path(__file__).parent / "demo_model"
PRESET_CONFIG = Path(__file__).parents[1] / "calculator" / "presets" / "demo.json"
PRETRAIN_TYPES = ("color", "shape", "exist")
"""question families of the demo's stage-1 pretraining; stage 2 (a short one) adds counting and positions"""

SPECIALS = ["<pad>", "<s>", "</s>", "<image>", "<unk>"]  # ids 0-4; <image> = config.image_token_index 3
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""LLaVA-1.5's conversation format: `USER: <image>\\n{question} ASSISTANT: {answer}</s>`"""

# Common words of VQA questions and answers beyond the synthetic task, so real questions tokenize partly.
COMMON_WORDS = """
a an the is are was were be do does did can could what which who whom whose where when why how many much
this that these those there here it its of in on at to from with without for by about under over above below
behind front next near left right top bottom side middle center up down inside outside
color colour shape kind type number count name sport animal room made wearing holding doing playing eating
man woman person people boy girl child dog cat horse bird cow sheep elephant bear zebra giraffe car bus truck
train plane boat bike motorcycle table chair bed couch tv laptop phone book clock vase cup bowl plate pizza
food water sky grass tree road street sign light building window door wall floor snow
white black gray grey brown orange pink purple gold silver teal round oval rectangle box pyramid arrow
yes no none not all some both one two three four five six seven eight nine ten zero
0 1 2 3 4 5 6 7 8 9 10 11 12 20 100
answer question using single word or phrase short user assistant image picture photo object objects
? . , ! ' : - ( ) / "
""".split()


def build_tokenizer():
    """Word-level, lower-cased tokenizer over the synthetic vocabulary plus common VQA words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from toolkit.data.synthetic import vocabulary

    words = list(dict.fromkeys(vocabulary() + COMMON_WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=["<image>"], model_max_length=256, padding_side="right",
    )
    tok.add_bos_token = False
    return tok


def build_processor():
    """LlavaProcessor: CLIP-style image preprocessing at 64x64 and the word-level tokenizer."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    config = json.loads(PRESET_CONFIG.read_text())
    vision = config["vision_config"]
    size = vision["image_size"]
    images = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=images, tokenizer=build_tokenizer(), patch_size=vision["patch_size"],
        vision_feature_select_strategy=config["vision_feature_select_strategy"], num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def demo_model_dir(name: str = "demo") -> Path:
    """The folder of a demo preset (config, weights, tokenizer, processor): the shipped demo model for `demo`,
    the materialised planted variant (`variant_dir`) for a name of `VARIANTS`."""
    if name != "demo":
        return variant_dir(name)
    if not (DEMO_DIR / "model.safetensors").exists():
        raise ModelLoadError(f"model: the demo model is missing from {DEMO_DIR}; rebuild it with "
                             f"`python scripts/build_demo_model.py` (CPU, a few minutes)")
    return DEMO_DIR


# ----------------------------------------------------------------------------------- planted variants
#
# A positive control for allocation studies: the shipped demo model with a deficiency planted in one component,
# which a low-rank update of that component repairs exactly. What ships is the planted tensor(s) and the recipe
# (`toolkit/training/demo_<component>/`: planted.safetensors, recipe.json; tens of KB), written by
# `scripts/build_demo_model.py --plant <component>`. The full model folder is materialised on first use into a
# cache folder keyed by the digests of the base weights and the planted tensors (`variant_dir`), so a rebuilt
# demo or plant never reads a stale copy, and no 4.8 MB copy per variant lives in the repository.

VARIANTS = {"demo-projector": "projector"}
"""planted variant preset -> the component whose deficiency it carries"""
DEMO_PRESETS = ("demo", *VARIANTS)
"""every preset whose weights ship with the repository (usable offline everywhere `demo` is)"""


def is_demo_preset(name: str) -> bool:
    return str(name).strip() in DEMO_PRESETS


def plant_dir(name: str) -> Path:
    """`toolkit/training/demo_<component>/`: where the variant's planted tensors and recipe ship."""
    return Path(__file__).parent / f"demo_{VARIANTS[name]}"


def cache_root() -> Path:
    """`$CMBA_CACHE_DIR`, else `$XDG_CACHE_HOME/cmba-toolkit`, else `~/.cache/cmba-toolkit`."""
    import os

    if os.environ.get("CMBA_CACHE_DIR"):
        return Path(os.environ["CMBA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmba-toolkit"


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_recipe(name: str) -> dict:
    """The variant's recipe.json (what was planted, how, and the measured effect), checked against its files."""
    if name not in VARIANTS:
        raise ModelLoadError(f"model: '{name}' is not a planted demo variant (known: {', '.join(VARIANTS)})")
    folder = plant_dir(name)
    if not (folder / "recipe.json").is_file() or not (folder / "planted.safetensors").is_file():
        raise ModelLoadError(f"model: the planted variant '{name}' is missing from {folder}; rebuild it with "
                             f"`python scripts/build_demo_model.py --plant {VARIANTS[name]}`")
    recipe = json.loads((folder / "recipe.json").read_text())
    base = demo_model_dir()
    if recipe.get("base_sha256") != _sha256(base / "model.safetensors"):
        raise ModelLoadError(f"model: the planted variant '{name}' was built from other demo weights than "
                             f"{base}; rebuild it with `python scripts/build_demo_model.py --plant {VARIANTS[name]}`")
    return recipe


def planted_state(name: str) -> dict:
    """The variant's full state dict: the demo's weights with the planted tensors in place (CPU tensors)."""
    from safetensors.torch import load_file

    read_recipe(name)
    state = load_file(demo_model_dir() / "model.safetensors")
    planted = load_file(plant_dir(name) / "planted.safetensors")
    unknown = sorted(set(planted) - set(state))
    if unknown:
        raise ModelLoadError(f"model: the planted variant '{name}' names tensors the demo model lacks: {unknown[:3]}")
    state.update(planted)
    return state


def variant_dir(name: str) -> Path:
    """The materialised model folder of a planted variant, built on first use (atomically: a folder is written
    next to it and renamed into place, so concurrent first uses by several jobs are safe)."""
    import hashlib
    import shutil
    import tempfile

    from safetensors.torch import save_file

    recipe = read_recipe(name)
    key = hashlib.sha256((recipe["base_sha256"] + _sha256(plant_dir(name) / "planted.safetensors")).encode())
    target = cache_root() / "demo-variants" / f"{name}-{key.hexdigest()[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        for f in DEMO_DIR.iterdir():
            if f.is_file() and f.name not in ("model.safetensors", "pretraining.json"):
                shutil.copy2(f, tmp / f.name)
        save_file({k: v.contiguous() for k, v in planted_state(name).items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "planted.json").write_text(json.dumps({"preset": name, **recipe}, indent=2) + "\n")
        try:
            tmp.rename(target)
        except OSError:  # another process got there first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise ModelLoadError(f"model: cannot write the planted variant '{name}' to {target.parent} ({exc.strerror or exc}); "
                             f"set CMBA_CACHE_DIR to a writable folder") from None
    return target
