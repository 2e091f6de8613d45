"""The batch builder: VQA records -> the tensors a family's model trains and generates on.

    >>> fmt = VQAFormatter.for_model(processor, model)          # or VQAFormatter(processor, "llava")
    >>> fmt.prompt("what color is the circle?")
    'USER: <image>\\nwhat color is the circle?\\nAnswer the question using a single word or phrase. ASSISTANT:'
    >>> batch = fmt.train_batch(records)        # input_ids, attention_mask, labels (-100 but answers), pixel_values...
    >>> batch = fmt.generation_batch(records)   # prompts for model.generate (left-padded)
    >>> fmt.decode(generated_ids, batch)        # ['red', ...]

A training row is what the family's processor produces for prompt + answer, in the family's own format
(toolkit.data.families: chat template turns, BLIP-2's `Question: ... Short answer:`, PaliGemma's `suffix=`,
image nesting): the processor encodes the whole text, so image tokens, token type ids and other per-token
fields are the processor's own. Labels are -100 on the prompt (the tokens of the generation prompt, which
is a prefix of the row) and on padding, so generation after the same prompt is what the loss trains.

Encoder-decoder models (BLIP-2 with Flan-T5; `is_encoder_decoder`) take the prompt as the encoder's input and
the answer + EOS as the decoder's `labels` (the model shifts them into decoder inputs); `generate` returns
decoder tokens only, which `decode` reads whole. The batch is always a dict `model(**batch)` accepts:
input_ids, attention_mask, labels, pixel_values and the family's extras (image_grid_thw, image_sizes,
pixel_attention_mask, token_type_ids, mm_token_type_ids).
"""

from __future__ import annotations

from toolkit.data.families import INSTRUCTION, answer_text, conventions, is_encoder_decoder, vqa_prompt

__all__ = ["IGNORE", "INSTRUCTION", "VQAFormatter"]

IGNORE = -100


class VQAFormatter:
    """Family-aware prompts, training batches and answer decoding for one processor."""

    def __init__(self, processor, model_type: str, *, encoder_decoder: bool = False):
        self.processor = processor
        self.model_type = model_type
        self.conventions = conventions(model_type)
        self.is_encoder_decoder = encoder_decoder
        """labels live on the decoder and `generate` returns decoder tokens only"""
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def for_model(cls, processor, model) -> VQAFormatter:
        """The builder for a loaded (or PEFT-wrapped) model: its family and whether it is encoder-decoder."""
        config = model.config
        return cls(processor, config.model_type, encoder_decoder=is_encoder_decoder(config))

    def prompt(self, question: str) -> str:
        return vqa_prompt(self.processor, self.model_type, question)

    def answer(self, question: str, answer: str) -> str:
        """The text a training row holds after the prompt (decoder-only families)."""
        return answer_text(self.processor, self.model_type, self.prompt(question), question, answer,
                           self.tokenizer.eos_token)

    def _images(self, records) -> list:
        return [[r.image] for r in records] if self.conventions.nest_images else [r.image for r in records]

    def _encode(self, texts, records, padding_side: str, **extra):
        tok = self.tokenizer
        previous = tok.padding_side
        tok.padding_side = padding_side
        try:
            # explicit too: some processors (InternVL) pass their own default padding side to the tokenizer
            return self.processor(text=texts, images=self._images(records), padding=True, return_tensors="pt",
                                  padding_side=padding_side, **extra)
        finally:
            tok.padding_side = previous

    def train_batch(self, records) -> dict:
        """Right-padded prompt + answer rows with answer-only labels, plus the processor's image tensors."""
        if self.is_encoder_decoder:
            return self._seq2seq_batch(records)
        prompts = [self.prompt(r.question) for r in records]
        if self.conventions.answer_as_suffix:  # the processor writes the suffix and its labels itself
            enc = self._encode(prompts, records, "right", suffix=[r.answer for r in records])
            batch = dict(enc)
            batch["labels"] = batch["labels"].long().masked_fill(batch["attention_mask"] == 0, IGNORE)
            return batch
        full = [p + self.answer(r.question, r.answer) for p, r in zip(prompts, records)]
        enc = self._encode(full, records, "right")
        prompt_ids = self._encode(prompts, records, "right")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        labels = ids.clone().long().masked_fill(mask == 0, IGNORE)
        for i in range(len(records)):
            n = int(prompt_ids["attention_mask"][i].sum())
            same = (ids[i, :n] == prompt_ids["input_ids"][i, :n]).long()
            # the generation prompt is a prefix of the row; were a tokenizer to merge across the boundary, the
            # loss starts where the row first differs from it
            n = n if bool(same.all()) else int(same.argmin())
            labels[i, :n] = IGNORE
        batch = dict(enc)
        batch["labels"] = labels
        return batch

    def _seq2seq_batch(self, records) -> dict:
        import torch

        enc = self._encode([self.prompt(r.question) for r in records], records, "right")
        answers = [self.answer_ids(r.answer) for r in records]
        width = max(len(a) for a in answers)
        labels = torch.full((len(records), width), IGNORE, dtype=torch.long)
        for i, a in enumerate(answers):
            labels[i, :len(a)] = torch.tensor(a)
        batch = dict(enc)
        batch["labels"] = labels
        return batch

    def answer_ids(self, answer: str) -> list[int]:
        """Decoder labels of an encoder-decoder model: the tokenizer's own encoding of the answer, with EOS."""
        ids = list(self.tokenizer(answer)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        return ids

    def generation_batch(self, records) -> dict:
        """Left-padded prompts, ready for `model.generate(**batch)`."""
        return dict(self._encode([self.prompt(r.question) for r in records], records, "left"))

    def decode(self, generated, batch) -> list[str]:
        """Answer strings from `generate` output: decoder tokens whole (encoder-decoder), else after the prompt."""
        new = generated if self.is_encoder_decoder else generated[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
