"""CMBA Toolkit: cross-modal budget allocation for LoRA fine-tuning of vision-language models.

The library behind the Streamlit app and the CLI (`python -m toolkit --help`). Typical use:

    >>> from toolkit import load_structure, AllocationSpec, Ratio, Budget, allocate
    >>> structure = load_structure("llava-1.5-7b")
    >>> result = allocate(structure, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    >>> result.components["projector"].rank
    32
"""

__version__ = "0.3.0"

from toolkit.training.processors import hide_broken_torchvision

hide_broken_torchvision()  # before transformers is imported: a torchvision built for another torch breaks it

from toolkit.calculator.allocation import Allocation, allocate, audit  # noqa: E402
from toolkit.calculator.spec import AllocationSpec, AlphaRule, Budget, Ratio, Targets  # noqa: E402
from toolkit.calculator.structure import ModelStructure, load_structure  # noqa: E402
from toolkit.errors import BudgetError, CmbaError, InputError, ModelLoadError, UnsupportedModelError  # noqa: E402

__all__ = [
    "Allocation",
    "AllocationSpec",
    "AlphaRule",
    "Budget",
    "BudgetError",
    "CmbaError",
    "InputError",
    "ModelLoadError",
    "ModelStructure",
    "Ratio",
    "Targets",
    "UnsupportedModelError",
    "allocate",
    "audit",
    "load_structure",
]
