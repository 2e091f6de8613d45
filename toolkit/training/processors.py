"""Loading a model's processor on any install: torchvision is optional, and every failure is one line.

    processor = load_processor("/models/qwen2-vl-2b", revision=None, model_id="qwen2-vl-2b")

Transformers gives Qwen2-VL, Qwen2.5-VL and SmolVLM2 processors a *video* processor that needs torchvision.
VQA uses images only, and the image processors have a PIL backend, so where torchvision is missing the
processor is built from its image processor, tokenizer and chat template without the video processor.
torchvision is therefore not a requirement: the wheels on PyPI are built against the CUDA torch and do not
import with a CPU torch build (their compiled ops are missing), while on a CUDA machine `pip install
torchvision` (the release matching torch) works and is then used. A torchvision that is installed but does not
import is reported as such, in one line, instead of a traceback from deep inside transformers.
"""

from __future__ import annotations

import functools

from toolkit.errors import ModelLoadError


@functools.lru_cache(maxsize=1)
def torchvision_problem() -> str | None:
    """None when torchvision is absent or imports; else why an installed torchvision cannot be imported."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken build raises RuntimeError / OSError / ImportError
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def torchvision_works() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None and torchvision_problem() is None


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

    if problem := torchvision_problem():
        import torch

        raise ModelLoadError(f"model: torchvision is installed but cannot be imported with torch {torch.__version__} "
                             f"({problem}): it was built for another torch build; pip uninstall torchvision (the "
                             f"processors work without it) or install the torchvision build matching this torch")
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
