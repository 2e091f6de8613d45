"""Loading the base model and putting the calculator's LoRA on it: what `train` (and evaluation) run first.

    device = _device()                                             # cuda when there is one, else cpu
    precision = resolve_precision("auto", device)                  # bf16 on a GPU that has it, else fp32
    model, processor = load_model(structure, precision=precision, quantize=None, device=device)
    peft_model = apply_lora(model, allocation, lora_dropout=0.05, quantized=False, gradient_checkpointing=False)
    optimizer = torch.optim.AdamW(param_groups(peft_model, allocation, settings))   # one group per component

Weights come from the demo folder, a local folder or the Hub (`model_source`); `--quantize 4bit` loads the
base through bitsandbytes (nf4): the language decoder is quantized, the vision tower, the projector and
lm_head stay in 16-bit (so components are treated alike: no component's LoRA repairs quantization error),
after `check_bitsandbytes` proved that 4-bit runs on the device; `quantization_doc` records it in cmba.json.
Processors load through toolkit.training.processors (torchvision optional). `apply_lora` refuses a model on which PEFT's trainable-parameter
count differs from the allocation's. `modules_without_gradient` names the adapted modules whose LoRA got no
gradient in the last backward pass (budget spent on dead modules).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import InputError

if TYPE_CHECKING:
    from toolkit.training.settings import TrainSettings


def quiet_libraries() -> None:
    """Silence import-time chatter that is not the user's concern (bitsandbytes' optional CPU kernels, a
    deprecation inside PEFT, the `kernels` package's "Skipping publisher trust check" on every offline load), so
    logs show the training."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("kernels").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


default_device = _device
"""the device a single process trains and evaluates on: the GPU when there is one"""


def resolve_precision(precision: str, device) -> str:
    import torch

    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise InputError("precision: fp16 needs a CUDA GPU (mixed precision with loss scaling); use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError("precision: this GPU does not support bf16; use fp16 or fp32")
    return precision


def check_bitsandbytes(device) -> None:
    """`--quantize 4bit` only where bitsandbytes really runs: a tiny nf4 round trip on the target device."""
    try:
        import logging

        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot run"
        raise InputError(f"quantize: 4bit needs bitsandbytes, which cannot be imported here ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); pip install bitsandbytes>=0.45") from None
    try:
        w = torch.randn(64, 64, device=device)
        q, state = bnbf.quantize_4bit(w, quant_type="nf4")
        back = bnbf.dequantize_4bit(q, state)
        if back.shape != w.shape:
            raise RuntimeError("wrong shape")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"quantize: bitsandbytes cannot run 4-bit on {device.type} here "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); train without --quantize") from None


# ------------------------------------------------------------------------------------- model


def model_source(structure) -> tuple[str, str | None]:
    """Where the weights come from: (path or Hub id, Hub id or None)."""
    from toolkit.training.demo import demo_model_dir, is_demo_preset

    if structure.source == "preset" and is_demo_preset(structure.model_id):  # `demo` and its planted variants
        return str(demo_model_dir(structure.model_id)), None
    if structure.source == "preset":
        if not structure.hub_id:
            raise InputError(f"model: preset '{structure.model_id}' has no weights to train (configs only)")
        return structure.hub_id, structure.hub_id
    if structure.source == "local":
        return str(Path(structure.model_id).resolve()), None
    return structure.model_id, structure.model_id


QUANTIZED_COMPONENTS = ("language",)
"""what `--quantize 4bit` quantizes: the language decoder only; vision tower, projector and lm_head stay 16-bit"""


def kept_in_16bit(structure) -> list[str]:
    """Modules bitsandbytes must not quantize: every vision and projector Linear (so their LoRA is trained on
    the same unquantized weights in every arm, and no component's LoRA repairs quantization error) and lm_head."""
    return [m.name for c in ("vision", "projector") for m in structure.linears(c)] + ["lm_head"]


def quantization_doc(quantize: str | None) -> dict | None:
    """What was quantized, for cmba.json and evaluation results."""
    if quantize != "4bit":
        return None
    return {"method": "bitsandbytes nf4, double quantization", "quantized": list(QUANTIZED_COMPONENTS),
            "kept_16bit": ["vision", "projector", "lm_head"]}


def nf4_config(structure, precision: str):
    """QLoRA's BitsAndBytesConfig: nf4 with double quantization; `kept_in_16bit` modules are not quantized."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=kept_in_16bit(structure))


def load_model(structure, *, precision: str, quantize: str | None, device, revision: str | None = None):
    """The base model and its processor, weights from the demo folder, a local folder or the Hub.

    Any failure to load either (a missing file or package, a broken torchvision, a config transformers cannot
    read) is a one-line `ModelLoadError` naming it."""
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText

    from toolkit.errors import ModelLoadError
    from toolkit.training.processors import load_error, load_processor

    source, hub_id = model_source(structure)
    if hub_id and not Path(source).exists():
        from toolkit.calculator.structure import _hub_reachable

        if not _hub_reachable():
            raise ModelLoadError(f"model: weights of '{hub_id}' must be downloaded from the Hub, which is unreachable "
                                 f"(offline); train the offline `demo` preset or pass a local folder with weights")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    from toolkit.training.compute import attention_implementation

    kwargs = {"dtype": dtype, "revision": revision}
    if attention_implementation(device, precision) != "sdpa":  # SDPA is transformers' default wherever a model has it
        kwargs["attn_implementation"] = attention_implementation(device, precision)
    if quantize == "4bit":
        kwargs["quantization_config"] = nf4_config(structure, precision)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    processor = load_processor(source, revision=revision, model_id=structure.model_id)
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever fails while loading is the user's one line
        raise load_error("weights", structure.model_id, exc, source) from None
    if quantize != "4bit":
        model.to(device)
    return model, processor


def apply_lora(model, allocation, *, lora_dropout: float, quantized: bool, gradient_checkpointing: bool):
    """PEFT model with the calculator's LoraConfig; refuses if PEFT's count differs from the allocation's."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": lora_dropout})
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise InputError(f"allocation: its LoraConfig does not fit this model ({str(exc).splitlines()[0]})") from None
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable != allocation.total:
        raise InputError(f"allocation: PEFT makes {trainable:,} parameters trainable on the loaded model but the "
                         f"allocation predicts {allocation.total:,}; the weights do not match the config the "
                         f"allocation was computed from")
    return peft_model


def _module_of(param_name: str) -> str:
    """'base_model.model.<module>.lora_A.default.weight' (or .modules_to_save.default.weight) -> '<module>'."""
    name = param_name.removeprefix("base_model.model.")
    for marker in (".lora_A.", ".lora_B.", ".modules_to_save."):  # modules_to_save: a fully trained layer
        if marker in name:
            return name.split(marker)[0]
    return name


def param_groups(peft_model, allocation, settings: TrainSettings) -> list[dict]:
    """One optimizer group per component, so per-component learning rates apply."""
    component = {m.name: m.component for m in allocation.modules}
    groups: dict[str, list] = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            groups.setdefault(component.get(_module_of(name), "other"), []).append(p)
    return [{"params": ps, "lr": settings.component_lr.get(c, settings.learning_rate),
             "base_lr": settings.component_lr.get(c, settings.learning_rate), "component": c,
             "weight_decay": settings.weight_decay} for c, ps in sorted(groups.items())]


def modules_without_gradient(peft_model) -> list[str]:
    """Adapted modules whose LoRA B received no (or an all-zero) gradient in the last backward pass."""
    dead = []
    for name, module in peft_model.named_modules():
        lora_b = getattr(module, "lora_B", None)
        if lora_b is None or not hasattr(lora_b, "keys") or "default" not in lora_b:
            continue
        grad = lora_b["default"].weight.grad
        if grad is None or not bool(grad.abs().sum() > 0):
            dead.append(name.removeprefix("base_model.model."))
    return dead

