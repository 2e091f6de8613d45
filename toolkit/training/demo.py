"""The offline demo VLM (preset `demo`): a tiny LLaVA with its own tokenizer and processor, pretrained here.

What it is: a real `LlavaForConditionalGeneration` (CLIP vision tower 64-wide x 4 layers, 2-layer MLP projector,
Llama decoder 128-wide x 4 layers, ~1.2 M parameters) whose word-level tokenizer and CLIP image processor are
built from code, so nothing is downloaded. `scripts/build_demo_model.py` pretrains it from a fixed seed on
part of the synthetic task (`synthetic:shapes` with only colour, shape and existence questions) and writes
`toolkit/demo_model/`, which ships with the repository. Fine-tuning it with LoRA on the full task then has to
teach counting and positions, which the base cannot do: so on this data the allocation visibly matters.

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
"""question families the demo base model is pretrained on; counting and positions are left to fine-tuning"""

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


def demo_model_dir() -> Path:
    """The shipped, pretrained demo model folder (config, weights, tokenizer, processor)."""
    if not (DEMO_DIR / "model.safetensors").exists():
        raise ModelLoadError(f"model: the demo model is missing from {DEMO_DIR}; rebuild it with "
                             f"`python scripts/build_demo_model.py` (CPU, a few minutes)")
    return DEMO_DIR
