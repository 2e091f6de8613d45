"""Errors a user can act on.

Every exception raised for bad input derives from `CmbaError` and carries a one-line message that names
the offending field and what is allowed. The CLI prints `error: <message>` and exits 2; the app shows the
message in an `st.error` box. Anything else escaping is a bug, not a user error.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 2000
"""longest error line"""
_TOKEN = re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{16,}\b")
"""what Hugging Face tokens look like (user and org tokens)"""


def looks_like_token(text: str) -> bool:
    return bool(_TOKEN.search(str(text)))


def redact(text: str) -> str:
    """`text` with anything that looks like an access token replaced by ***: error lines echo user input."""
    return _TOKEN.sub("***", str(text))


class CmbaError(Exception):
    """Base class: a clear, one-line, user-facing message."""

    def __init__(self, message: str):
        # One line only: callers render it verbatim next to the field. Echoed input is clipped so a pasted
        # megabyte stays a readable line.
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 60] + f" ... [{len(text) - MAX_MESSAGE + 60} characters cut] " + text[-40:]
        super().__init__(text)


class InputError(CmbaError, ValueError):
    """A value given by the user is malformed or out of range (names the field)."""


class ModelLoadError(CmbaError):
    """A model's config could not be found, read or parsed."""


class UnsupportedModelError(CmbaError):
    """The architecture cannot be split into vision / projector / language."""


class BudgetError(InputError):
    """The budget cannot be met on the targeted modules (below the minimum or above the maximum)."""


class TrainingDiverged(CmbaError):
    """The loss or the trained weights became NaN or infinite: the run stops without writing an adapter."""
