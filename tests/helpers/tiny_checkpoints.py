"""Tiny real checkpoints of every family, built offline: what a user's downloaded model folder holds.

`build_checkpoint(key, folder)` writes a folder that `from_pretrained` reads exactly as a Hub download:
config.json and random weights of the family's model class (the tiny configs of conftest, with the token ids
of the tokenizer below), and the family's own processor classes (image processor, tokenizer, chat template)
saved with `save_pretrained`.

The tokenizer is trained here with the `tokenizers` library (BPE over the synthetic task's words and the
prompt words), with the family's special tokens: SentencePiece-style `▁` word boundaries as in Llama, Gemma
and T5, and the family's end-of-turn token (`<|im_end|>`, `<end_of_utterance>`, `</s>`, `<eos>`). Chat
templates are short versions of the published ones (same role markers and image placement).

    >>> folder = build_checkpoint("qwen2_vl", tmp_path / "qwen2_vl")
    >>> AutoProcessor.from_pretrained(folder); AutoModelForImageTextToText.from_pretrained(folder)
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.tiny import build_tiny_model, family_of, tiny_config_dict
from toolkit.training.processors import images_only

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL's template (without add_vision_id and videos)"""

IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""Idefics3 / SmolVLM's template"""

LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""llava-hf's LLaVA-1.5 template: `USER: <image>\\n{text} ASSISTANT:`"""

FAMILY_TOKENS = {
    # family: (specials in id order: pad, bos, eos first; the image token and its companions after), template
    "llava": (["<pad>", "<s>", "</s>", "<unk>", "<image>"], LLAVA_TEMPLATE),
    "llava_next": (["<pad>", "<s>", "</s>", "<unk>", "<image>"], LLAVA_TEMPLATE),
    "blip-2": (["<pad>", "</s>", "</s>", "<unk>", "<image>"], None),
    "qwen2_vl": (["<|endoftext|>", None, "<|im_end|>", None, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                  "<|vision_end|>", "<|im_start|>"], QWEN_TEMPLATE),
    "idefics3": (["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<unk>", "<image>",
                  "<fake_token_around_image>", "<global-img>"], IDEFICS3_TEMPLATE),
    "paligemma": (["<pad>", "<bos>", "<eos>", "<unk>", "<image>"], None),
    "t5": (["<pad>", None, "</s>", "<unk>", "<image>"], None),
}
TEMPLATE_OF = {"qwen2_5_vl": "qwen2_vl", "smolvlm": "idefics3"}
FAMILY_TOKENS["llava_onevision"] = (["<|endoftext|>", None, "<|im_end|>", None, "<image>", "<video>", "<|im_start|>"],
                                    QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n"))
"""LLaVA-OneVision: Qwen2's turns with LLaVA's `<image>` placeholder"""
FAMILY_TOKENS["internvl"] = (["<|endoftext|>", None, "<|im_end|>", None, "<IMG_CONTEXT>", "<img>", "</img>", "<video>",
                              "<|im_start|>"], QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>",
                                                                     "<IMG_CONTEXT>\n"))
"""InternVL (-hf): Qwen2.5 turns, `<img><IMG_CONTEXT>...</img>` images"""
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
FAMILY_TOKENS["gemma3"] = (["<pad>", "<bos>", "<eos>", "<unk>", "<image_soft_token>", "<start_of_image>",
                            "<end_of_image>", "<start_of_turn>", "<end_of_turn>"], GEMMA3_TEMPLATE)
NAMED_TOKENS = {
    "internvl": {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                 "video_token": "<video>"},
    "gemma3": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
}
"""the named special tokens a family's processor reads from its tokenizer"""

CORPUS_WORDS = """what color is the circle square triangle shape red green blue yellow how many shapes are there
is there a object where top bottom left right yes no zero one two three four five answer question using single
word or phrase short en user assistant system you helpful picture of 0 1 2 3 4 5 ? . , : -""".split()


def _corpus() -> list[str]:
    from toolkit.data.synthetic import vocabulary

    words = list(dict.fromkeys(vocabulary() + CORPUS_WORDS))
    return [" ".join(words[i:i + 6]) for i in range(0, len(words), 3)] * 4


def train_tokenizer(family: str, *, vocab_size: int = 200):
    """A BPE tokenizer with `▁` word boundaries trained on the task's words, plus the family's special tokens."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    key = "t5" if family == "blip-2+flan-t5" else TEMPLATE_OF.get(family, family_of(family))
    specials, template = FAMILY_TOKENS[key]
    named = [s for s in dict.fromkeys(specials) if s]
    core = Tokenizer(BPE(unk_token="<unk>" if "<unk>" in named else None))
    # SentencePiece-style: a word starts with ▁ unless it opens the text (Gemma and T5 write no dummy prefix)
    scheme = {"t5": "always", "paligemma": "never"}.get(key, "first")
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    # Qwen (byte-level BPE) and Gemma split line breaks from words and write no dummy prefix
    if key in ("qwen2_vl", "llava_onevision", "internvl", "gemma3"):
        scheme = "never"
        core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                      pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    core.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=named,
                                                            initial_alphabet=["\n"], show_progress=False))
    pad, bos, eos, unk = specials[:4]
    extra = [s for s in named[4:]]
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, bos_token=bos, eos_token=eos,
                                  unk_token=unk, additional_special_tokens=extra, model_max_length=512,
                                  extra_special_tokens=NAMED_TOKENS.get(key, {}))
    return tok, template


def _ids(tok, config: dict, family: str) -> dict:
    """The config with the tokenizer's ids and vocabulary size."""
    text = config["text_config"]
    image = tok.convert_tokens_to_ids({"qwen2_vl": "<|image_pad|>", "qwen2_5_vl": "<|image_pad|>", "internvl": "<IMG_CONTEXT>",
                                       "gemma3": "<image_soft_token>"}.get(family, "<image>"))
    if family == "gemma3":
        config.update(boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                      eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"))
    for key in ("image_token_index", "image_token_id"):
        if key in config:
            config[key] = image
    if "video_token_index" in config:
        config["video_token_index"] = tok.convert_tokens_to_ids("<video>")
    if family in ("qwen2_vl", "qwen2_5_vl"):
        config.update(video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                      vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                      vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    vocab = len(tok)
    text.update(vocab_size=vocab, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if tok.bos_token_id is not None:
        text["bos_token_id"] = tok.bos_token_id
    if text.get("model_type") == "t5":
        text["decoder_start_token_id"] = tok.pad_token_id
    if "vocab_size" in config:
        config["vocab_size"] = vocab
    if "pad_token_id" in config:
        config["pad_token_id"] = tok.pad_token_id
    if "qformer_config" in config:
        config["qformer_config"] = {**config["qformer_config"], "vocab_size": vocab}
    return config


def _processor(family: str, key: str, config: dict, tok, template):
    import transformers as tf

    vc = config.get("vision_config", {})
    size = vc.get("image_size", 16)
    if family == "llava":
        images = tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return tf.LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=vc["patch_size"],
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=template)
    if family == "llava_next":
        images = tf.LlavaNextImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                            image_grid_pinpoints=config["image_grid_pinpoints"])
        return tf.LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=vc["patch_size"],
                                     vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                     chat_template=template)
    if family == "blip-2":
        images = tf.BlipImageProcessor(size={"height": size, "width": size})
        tok.image_token = "<image>"
        return tf.Blip2Processor(image_processor=images, tokenizer=tok, num_query_tokens=config["num_query_tokens"])
    if family in ("qwen2_vl", "qwen2_5_vl"):
        # 16x16 images: 8x8 patches of 2 -> 4x4 merged tokens
        images = tf.Qwen2VLImageProcessor(patch_size=2, merge_size=2, temporal_patch_size=2,
                                          min_pixels=256, max_pixels=256)
        cls = tf.Qwen2_5_VLProcessor if family == "qwen2_5_vl" else tf.Qwen2VLProcessor
        return images_only(cls)(image_processor=images, tokenizer=tok, video_processor=_video(family, images),
                   chat_template=template)
    if family in ("idefics3", "smolvlm"):
        common = dict(size={"longest_edge": size}, max_image_size={"longest_edge": size}, do_image_splitting=False)
        seq = (size // vc["patch_size"]) ** 2 // config["scale_factor"] ** 2
        if family == "idefics3":
            return tf.Idefics3Processor(image_processor=tf.Idefics3ImageProcessor(**common), tokenizer=tok,
                                        image_seq_len=seq, chat_template=template)
        return images_only(tf.SmolVLMProcessor)(image_processor=tf.SmolVLMImageProcessor(**common), tokenizer=tok,
                                   video_processor=_video(family, None), image_seq_len=seq, chat_template=template)
    if family == "llava_onevision":
        images = tf.LlavaOnevisionImageProcessor(size={"height": size, "width": size},
                                                 image_grid_pinpoints=config["image_grid_pinpoints"])
        return images_only(tf.LlavaOnevisionProcessor)(
            image_processor=images, tokenizer=tok, video_processor=_video(family, images),
            num_image_tokens=(size // vc["patch_size"]) ** 2, vision_feature_select_strategy="full",
            vision_aspect_ratio=config["vision_aspect_ratio"], chat_template=template)
    if family == "internvl":
        images = tf.GotOcr2ImageProcessor(size={"height": size[0], "width": size[1]}, crop_to_patches=False)
        return images_only(tf.InternVLProcessor)(image_processor=images, tokenizer=tok,
                                                 video_processor=_video(family, images),
                                                 image_seq_length=config["image_seq_length"], chat_template=template)
    if family == "gemma3":
        images = tf.Gemma3ImageProcessor(size={"height": size, "width": size})
        return tf.Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=config["mm_tokens_per_image"],
                                  chat_template=template)
    if family == "paligemma":
        images = tf.SiglipImageProcessor(size={"height": size, "width": size})
        images.image_seq_length = (size // vc["patch_size"]) ** 2
        tok.image_token, tok.image_token_id = "<image>", tok.convert_tokens_to_ids("<image>")
        return tf.PaliGemmaProcessor(image_processor=images, tokenizer=tok)
    raise KeyError(key)


def _video(family: str, images):
    """The family's video processor when torchvision works here, else None (VQA needs images only)."""
    from toolkit.training.processors import torchvision_works

    if not torchvision_works():
        return None
    import transformers as tf

    if family == "smolvlm":
        return tf.SmolVLMVideoProcessor()
    if family == "llava_onevision":
        return tf.LlavaOnevisionVideoProcessor()
    if family == "internvl":
        return tf.InternVLVideoProcessor()
    return tf.Qwen2VLVideoProcessor(patch_size=2, merge_size=2, temporal_patch_size=2)


def _save_processor(processor, family: str, folder: Path) -> None:
    """`save_pretrained`, or (a video processor needs torchvision, absent here) the same files written part by
    part, with the video processor's config as published, so the folder looks like a Hub download."""
    if getattr(processor, "video_processor", True) is not None:
        processor.save_pretrained(folder)
        return
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(processor.chat_template)
    settings = {"processor_class": type(processor).__name__}
    for key in ("image_seq_len", "image_seq_length", "num_image_tokens", "vision_feature_select_strategy",
                "vision_aspect_ratio"):
        if getattr(processor, key, None) is not None:
            settings[key] = getattr(processor, key)
    (folder / "processor_config.json").write_text(json.dumps(settings, indent=2))
    video = ({"video_processor_type": "SmolVLMVideoProcessor"} if family == "smolvlm" else
             {"video_processor_type": "LlavaOnevisionVideoProcessor"} if family == "llava_onevision" else
             {"video_processor_type": "InternVLVideoProcessor"} if family == "internvl" else
             {"video_processor_type": "Qwen2VLVideoProcessor", "patch_size": 2, "merge_size": 2,
              "temporal_patch_size": 2})
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))


def build_checkpoint(key: str, folder: Path) -> Path:
    """Write a complete tiny model folder of family or variant `key` (weights, processor, tokenizer)."""
    family = family_of(key)
    tok, template = train_tokenizer(key)
    config = _ids(tok, tiny_config_dict(key), family)
    processor = _processor(family, key, config, tok, template)
    config = _ids(processor.tokenizer, config, family)  # processors may add tokens (PaliGemma's <loc> tokens)
    overrides = {k: v for k, v in config.items() if k != "model_type"}
    model = build_tiny_model(key, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _save_processor(processor, family, folder)
    (folder / "tiny.json").write_text(json.dumps({"key": key, "family": family}))
    return folder
