"""Progress of long work (train, evaluate, waiting on a sweep, push): a tqdm bar on a terminal, plain lines
otherwise (a job's log, a pipe, CI), as the Hugging Face libraries do.

    with Bar(total=300, initial=0, desc="demo-r1-4-1-b8-s0", unit="step") as bar:
        for step in ...:
            bar.update(1, loss=f"{loss:.4f}")

On a TTY (stderr by default) the bar redraws in place. Elsewhere a line is written through `log` at the first
update, at every multiple of `every` units or after `every_s` seconds, whichever comes first, and at the end: `line(done, total,
postfix)` formats it (default "desc: 30/300 step, loss 0.4123"). `enabled=False` keeps plain lines even on a
TTY (`train --no-progress`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _default_line(desc: str, unit: str) -> Callable[[float, float, dict], str]:
    def line(done, total, postfix) -> str:
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        return f"{desc}: {done:,g}/{total:,g} {unit}{extra}"
    return line


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class Bar:
    """A progress bar (TTY) or periodic log lines (otherwise); see the module docstring."""

    def __init__(self, *, total: float, desc: str = "", unit: str = "it", initial: float = 0, enabled: bool = True,
                 every: float | None = 10, every_s: float | None = None, log: Callable[[str], None] = _stderr,
                 line: Callable[[float, float, dict], str] | None = None, stream=None):
        self.total, self.done, self.start = total, initial, initial
        self.every, self.every_s, self.log = every, every_s, log
        self.line = line or _default_line(desc, unit)
        self.postfix: dict = {}
        self._last_done, self._last_t = None, time.perf_counter()
        stream = stream or sys.stderr
        self.tqdm = None
        if enabled and getattr(stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.tqdm = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True)

    @property
    def is_tty(self) -> bool:
        """True when drawing a bar (then callers leave their own per-step lines out)."""
        return self.tqdm is not None

    def update(self, n: float = 1, **postfix) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self.tqdm is not None:
            self.tqdm.update(n)
            if postfix:
                self.tqdm.set_postfix(self.postfix, refresh=False)
            return
        now = time.perf_counter()
        due = (self._last_done is None or self.done >= self.total
               or (self.every is not None and self.done % self.every == 0)
               or (self.every_s is not None and now - self._last_t >= self.every_s))
        if due and self.done != self._last_done:
            self._last_done, self._last_t = self.done, now
            self.log(self.line(self.done, self.total, self.postfix))

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
