"""Prompts and batches for VQA: the same prompt for training and evaluation, loss on answer tokens only.

    >>> fmt = VQAFormatter(processor, model_type="llava")
    >>> fmt.prompt("what color is the circle?")
    'USER: <image>\\nwhat color is the circle?\\nAnswer the question using a single word or phrase. ASSISTANT:'
    >>> batch = fmt.train_batch(records)        # input_ids, attention_mask, labels (-100 but answers), pixel_values...
    >>> batch = fmt.generation_batch(records)   # left-padded prompts for model.generate
    >>> fmt.decode(generated_ids, batch)        # ['red', ...]

The prompt goes through the processor's chat template when it has one (LLaVA, Qwen2-VL, Idefics3 / SmolVLM),
with the short-answer instruction used for VQA; families without a template use their documented VQA prompt
(BLIP-2 `Question: ... Short answer:`, PaliGemma `answer en ...`). A training row is the processed prompt
(image tokens expanded by the processor) followed by the answer's tokens and EOS; labels are -100 everywhere
but on the answer and EOS, so generation after the same prompt is what the loss trains.
"""

from __future__ import annotations

INSTRUCTION = "Answer the question using a single word or phrase."
IGNORE = -100


class VQAFormatter:
    def __init__(self, processor, model_type: str):
        self.processor = processor
        self.model_type = model_type
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def prompt(self, question: str) -> str:
        question = question.strip()
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": f"{question}\n{INSTRUCTION}"}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.model_type == "paligemma":
            return f"answer en {question}"
        if self.model_type == "blip-2":
            return f"Question: {question} Short answer:"
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}\n{question}\n{INSTRUCTION}\n"

    def _encode_prompts(self, records, padding_side: str):
        tok = self.tokenizer
        previous = tok.padding_side
        tok.padding_side = padding_side
        try:
            return self.processor(text=[self.prompt(r.question) for r in records], images=[r.image for r in records],
                                  padding=True, return_tensors="pt")
        finally:
            tok.padding_side = previous

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        sep = "" if prompt[-1:].isspace() else " "
        ids = self.tokenizer(sep + answer, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None else [])

    def train_batch(self, records) -> dict:
        """Right-padded prompt + answer + EOS rows with answer-only labels, plus the processor's image tensors."""
        import torch

        enc = self._encode_prompts(records, "right")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        per_token = [k for k, v in enc.items() if k not in ("input_ids", "attention_mask")
                     and hasattr(v, "shape") and tuple(v.shape) == tuple(ids.shape)]
        rows = []
        for i, r in enumerate(records):
            n = int(mask[i].sum())
            answer = self.answer_ids(self.prompt(r.question), r.answer)
            rows.append((n, answer))
        width = max(n + len(a) for n, a in rows)
        pad = self.tokenizer.pad_token_id
        out_ids = torch.full((len(records), width), pad, dtype=ids.dtype)
        out_mask = torch.zeros((len(records), width), dtype=mask.dtype)
        labels = torch.full((len(records), width), IGNORE, dtype=torch.long)
        extra = {k: torch.zeros((len(records), width), dtype=enc[k].dtype) for k in per_token}
        for i, (n, answer) in enumerate(rows):
            a = torch.tensor(answer, dtype=ids.dtype)
            out_ids[i, :n] = ids[i, :n]
            out_ids[i, n:n + len(a)] = a
            out_mask[i, :n + len(a)] = 1
            labels[i, n:n + len(a)] = a
            for k in per_token:
                extra[k][i, :n] = enc[k][i, :n]
                # PaliGemma marks the suffix (the answer) with token type 1; other per-token ids stay 0 there
                extra[k][i, n:n + len(a)] = 1 if k == "token_type_ids" else 0
        batch = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and k not in per_token}
        batch.update(input_ids=out_ids, attention_mask=out_mask, labels=labels, **extra)
        return batch

    def generation_batch(self, records) -> dict:
        """Left-padded prompts, ready for `model.generate(**batch)`."""
        return dict(self._encode_prompts(records, "left"))

    def decode(self, generated, batch) -> list[str]:
        """Answer strings from `generate` output (the prompt part cut off)."""
        new = generated[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
