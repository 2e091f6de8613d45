"""Loading a model's processor on any install: torchvision is optional, and every failure is one line.

    processor = load_processor("/models/qwen2-vl-2b", revision=None, model_id="qwen2-vl-2b")

Transformers gives Qwen2-VL, Qwen2.5-VL and SmolVLM2 processors a *video* processor that needs torchvision.
VQA uses images only, and the image processors have a PIL backend, so where torchvision is missing the
processor is built from its image processor, tokenizer and chat template without the video processor.
torchvision is therefore not a requirement: the wheels on PyPI are built against the CUDA torch and do not
import with a CPU torch build (their compiled ops are missing), while on a CUDA machine `pip install
torchvision` (the release matching torch) works and is then used. A torchvision that is installed but does not
import (that CUDA wheel next to a CPU torch) would break every transformers import: `import toolkit` hides it
(`hide_broken_torchvision`), so the PIL image processors are used as if it were absent.
"""

from __future__ import annotations

import functools

from toolkit.errors import ModelLoadError

_PROBLEM: list[str] = []


def hide_broken_torchvision() -> str | None:
    """Make an installed torchvision that cannot be imported invisible, before transformers looks for it.

    The PyPI torchvision wheels are built against the CUDA torch; with the CPU torch their compiled ops are
    missing and `import torchvision` raises, which transformers (it imports torchvision whenever the package is
    installed) turns into failures of every model, config and processor. Marking the module absent in
    `sys.modules` makes `find_spec` return None, so transformers uses its PIL image processors instead.
    Returns why torchvision was hidden (None when it imports or is not installed). Called by `import toolkit`.
    """
    import importlib.util
    import sys

    if _PROBLEM:
        return _PROBLEM[0]
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken build raises RuntimeError / OSError / ImportError
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec -> None, import -> ImportError
        _PROBLEM.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return _PROBLEM[0]
    return None


def torchvision_problem() -> str | None:
    """Why the installed torchvision was hidden (it does not import with this torch), else None."""
    return _PROBLEM[0] if _PROBLEM else None


def torchvision_works() -> bool:
    import importlib.util

    hide_broken_torchvision()
    return importlib.util.find_spec("torchvision") is not None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def missing_package(exc: BaseException) -> str | None:
    """The pip package an ImportError asks for, when it names one (transformers' `requires the X library`)."""
    import re

    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return exc.name.split(".")[0]
    for pattern in (r"requires the (\w[\w-]*) library", r"[Pp]ackage `?(\w[\w-]*)`? is required", r"pip install (\w[\w-]*)"):
        if m := re.search(pattern, text):
            return m.group(1).lower()
    return None


PARTS = {
    "processor": {"tokenizer": ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json"),
                  "image processor": ("preprocessor_config.json", "processor_config.json")},
    "weights": {"weights": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                            "pytorch_model.bin.index.json")},
}
"""what a local model folder must hold to load each part (any one of the files)"""


def missing_files(what: str, source: str | None) -> str | None:
    """'tokenizer (tokenizer.json, tokenizer.model, ...)' when a local folder lacks a part's files, else None."""
    from pathlib import Path

    if not source or not Path(source).is_dir():
        return None
    for part, names in PARTS.get(what, {}).items():
        if not any((Path(source) / n).exists() for n in names):
            return f"{part} ({' or '.join(names)})"
    return None


def load_error(what: str, model_id: str, exc: BaseException, source: str | None = None) -> ModelLoadError:
    """One line naming the missing package or file."""
    if missing := missing_files(what, source):
        return ModelLoadError(f"model: cannot load the {what} of '{model_id}': the folder {source} has no {missing}")
    package = missing_package(exc) if isinstance(exc, ImportError) else None
    if package:
        return ModelLoadError(f"model: loading the {what} of '{model_id}' needs the Python package '{package}', which "
                              f"is not installed here; pip install {package}")
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return ModelLoadError(f"model: cannot load the {what} of '{model_id}': missing file {exc.filename}")
    return ModelLoadError(f"model: cannot load the {what} of '{model_id}' ({type(exc).__name__}: {first_line(exc)})")


def _without_video(source: str, revision: str | None):
    """The processor from its parts (image processor, tokenizer, chat template, processor settings), no videos."""
    import json

    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils import cached_file

    config = AutoConfig.from_pretrained(source, revision=revision)
    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[config.model_type])
    kwargs = {}
    path = cached_file(source, "processor_config.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    if path:
        kwargs = {k: v for k, v in json.loads(open(path).read()).items()
                  if k not in ("processor_class", "image_processor", "video_processor", "tokenizer")
                  and not isinstance(v, dict)}
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    images = AutoImageProcessor.from_pretrained(source, revision=revision)
    template = getattr(tokenizer, "chat_template", None)
    chat = cached_file(source, "chat_template.jinja", revision=revision, _raise_exceptions_for_missing_entries=False)
    if chat:
        template = open(chat).read()
    return images_only(cls)(image_processor=images, tokenizer=tokenizer, video_processor=None,
                             **{"chat_template": template, **kwargs})


@functools.cache
def images_only(cls):
    """`cls` accepting `video_processor=None` (transformers type-checks every part, and the video processor
    class is a placeholder without torchvision); same name, same behaviour on images and text."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument is None and argument_name == "video_processor":
            return None
        return cls.check_argument_for_proper_class(self, argument_name, argument)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        from transformers.processing_utils import ProcessorMixin

        if getattr(self, "video_processor", None) is None:  # SmolVLM's override reads video defaults first
            return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)
        return cls.apply_chat_template(self, conversation, chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                       "apply_chat_template": apply_chat_template,
                                       "__doc__": cls.__doc__, "__module__": cls.__module__})


def load_processor(source: str, *, revision: str | None, model_id: str):
    """`AutoProcessor.from_pretrained`, without torchvision where the family's video processor would need it."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, revision=revision)
    except ImportError as exc:
        if missing_package(exc) != "torchvision":
            raise load_error("processor", model_id, exc, source) from None
    except Exception as exc:  # noqa: BLE001 - any loading failure is the user's one line
        raise load_error("processor", model_id, exc, source) from None
    try:
        return _without_video(source, revision)
    except Exception as exc:  # noqa: BLE001
        raise load_error("processor", model_id, exc, source) from None
