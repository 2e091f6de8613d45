"""The data order of a run: which record is sample k, a pure function of (seed, k) and the data.

    order = DataOrder(n=len(data), seed=0, per_step=16, lengths=token_lengths(fmt, data))   # grouped
    order = DataOrder(n=len(data), seed=0, per_step=16)                                    # plain shuffle
    order.index(k)           # the record of sample k of the run (k counts on over epochs)

Epoch e is the permutation `sample_order(n, seed, e)`. With `lengths` (length-grouped batches) each epoch's
permutation is cut into windows of `per_step x WINDOW` samples; inside a window the samples are sorted by length
and cut into blocks of `per_step` (one optimizer step, all its micro-batches and processes), and the blocks are
shuffled by a generator seeded with (seed, epoch, window). So a step holds questions of similar length (less
padding to compute on), drawn from a random window of the epoch; every record is still seen once per epoch;
and a run resumed at step s sees exactly the batches an uninterrupted one would, because nothing depends on
anything but (seed, k), the lengths and the batch shape.
"""

from __future__ import annotations

WINDOW = 32
"""optimizer steps' worth of samples sorted together (HF's LengthGroupedSampler uses 50 batches)"""


def token_lengths(fmt, data) -> list[int]:
    """Tokens of question + answer per record (the part of a row that varies; image tokens do not)."""
    texts = data.texts()
    if not texts:
        return []
    enc = fmt.tokenizer([f"{q} {a}" for q, a in texts], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in enc]


class DataOrder:
    """Sample k of a run -> record index (see the module docstring)."""

    def __init__(self, *, n: int, seed: int, per_step: int = 1, lengths: list[int] | None = None):
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths: {len(lengths)} given for {n} records")
        self.n, self.seed, self.per_step = n, seed, max(1, per_step)
        self.lengths = lengths
        self._epochs: dict[int, tuple[int, ...]] = {}

    @property
    def grouped(self) -> bool:
        return self.lengths is not None and self.per_step > 1

    def epoch(self, epoch: int) -> tuple[int, ...]:
        """The records of epoch `epoch` in order."""
        from toolkit.training.loop import sample_order  # the plain shuffle's one owner

        if epoch not in self._epochs:
            if len(self._epochs) > 2:  # a run moves forward: keep the current epoch and its neighbour
                self._epochs.pop(min(self._epochs))
            self._epochs[epoch] = self._grouped(epoch) if self.grouped else sample_order(self.n, self.seed, epoch)
        return self._epochs[epoch]

    def index(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        return self.epoch(epoch)[pos]

    def _grouped(self, epoch: int) -> tuple[int, ...]:
        import torch

        from toolkit.training.loop import sample_order

        perm = sample_order(self.n, self.seed, epoch)
        size = self.per_step * WINDOW
        out: list[int] = []
        for w, start in enumerate(range(0, self.n, size)):
            window = sorted(perm[start:start + size], key=lambda i: self.lengths[i])  # stable: ties keep perm order
            full = len(window) // self.per_step * self.per_step
            blocks = [window[b:b + self.per_step] for b in range(0, full, self.per_step)]
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7_919 + w)
            for b in torch.randperm(len(blocks), generator=g).tolist():
                out.extend(blocks[b])
            out.extend(window[full:])  # the epoch's short last block stays last, so blocks stay aligned to steps
        return tuple(out)
