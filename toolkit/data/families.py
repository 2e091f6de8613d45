"""Each VLM family's own prompt conventions, in one place: what the batch builder (toolkit.data.prompting) asks.

    >>> conv = conventions("paligemma")
    >>> conv.prompt_style, conv.answer_as_suffix, conv.nest_images
    ('paligemma', True, False)
    >>> conventions("smolvlm").nest_images     # one list of images per prompt
    True
    >>> is_encoder_decoder(model.config)        # BLIP-2 with Flan-T5: labels live on the decoder
    True

| family                 | prompt                                   | answer                                   |
|------------------------|------------------------------------------|------------------------------------------|
| chat template (LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Idefics3 / SmolVLM, ...) | the template's user turn + generation prompt | the template's assistant turn up to its end-of-turn token |
| BLIP-2 (OPT)           | `Question: {q} Short answer:`            | ` {answer}` + EOS after the prompt       |
| BLIP-2 (Flan-T5)       | the same, as the *encoder* input         | the decoder's labels: `{answer}` + EOS   |
| PaliGemma              | `<image>answer en {q}` (processor adds BOS and `\\n`) | the processor's `suffix=`: `{answer}` + EOS, no leading space |
| other, no template     | `<image>\\n{q}\\n{instruction}\\n`         | `{answer}` + EOS                          |

Idefics3 / SmolVLM and Gemma 3 processors read a flat image list as N images of *one* prompt, so their images
go one list per prompt (`nest_images`); the others take one image per prompt in a flat list.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTRUCTION = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Conventions:
    """How one family writes a VQA prompt and its answer."""

    prompt_style: str = "chat"
    """'chat' (the processor's chat template when it has one), 'blip2', 'paligemma' or 'plain'"""
    answer_as_suffix: bool = False
    """the processor takes the answer itself (`suffix=`) and returns its own labels (PaliGemma)"""
    nest_images: bool = False
    """images are passed as one list per prompt (Idefics3 / SmolVLM)"""


_FAMILIES = {
    "paligemma": Conventions(prompt_style="paligemma", answer_as_suffix=True),
    "blip-2": Conventions(prompt_style="blip2"),
    "idefics3": Conventions(nest_images=True),
    "smolvlm": Conventions(nest_images=True),
    "idefics2": Conventions(nest_images=True),
    "gemma3": Conventions(nest_images=True),
}


def conventions(model_type: str) -> Conventions:
    """The conventions of `model_type` (a chat-template family when not listed)."""
    return _FAMILIES.get(model_type, Conventions())


def is_encoder_decoder(config) -> bool:
    """True when the language model is an encoder-decoder (BLIP-2 with Flan-T5): the prompt is the encoder's
    input, the answer the decoder's labels, and `generate` returns decoder tokens only."""
    if getattr(config, "is_encoder_decoder", False):
        return True
    if getattr(config, "use_decoder_only_language_model", True) is False:
        return True
    text = getattr(config, "text_config", None)
    return bool(text is not None and getattr(text, "is_encoder_decoder", False))


def vqa_prompt(processor, model_type: str, question: str) -> str:
    """The generation prompt for `question`, in the family's own format."""
    question = question.strip()
    style = conventions(model_type).prompt_style
    if style == "paligemma":
        return f"{getattr(processor, 'image_token', '<image>')}answer en {question}"
    if style == "blip2":
        return f"Question: {question} Short answer:"
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(_messages(question), add_generation_prompt=True, tokenize=False)
    image_token = getattr(processor, "image_token", "<image>")
    return f"{image_token}\n{question}\n{INSTRUCTION}\n"


def _messages(question: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{question}\n{INSTRUCTION}"}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def answer_text(processor, model_type: str, prompt: str, question: str, answer: str, eos: str) -> str:
    """What follows `prompt` in a training row: the family's assistant turn up to its end token.

    With a chat template, the template's own rendering of the answer (e.g. Qwen's `red<|im_end|>`, LLaVA's
    ` red` + EOS); otherwise ` answer` + EOS after a prompt that does not end in white space, `answer` + EOS
    after one that does.
    """
    if conventions(model_type).prompt_style == "chat" and getattr(processor, "chat_template", None):
        full = processor.apply_chat_template(_messages(question.strip(), answer), tokenize=False)
        if full.startswith(prompt):
            tail = full[len(prompt):]
            if eos and eos in tail:
                return tail[:tail.index(eos) + len(eos)]
            return tail.rstrip() + (eos or "")
    sep = "" if prompt[-1:].isspace() else " "
    return f"{sep}{answer}{eos or ''}"
