"""CMBA Toolkit: cross-modal budget allocation for LoRA fine-tuning of vision-language models.

The library behind the Streamlit app and the CLI (`python -m toolkit --help`). Typical use:

    >>> from toolkit import load_structure, AllocationSpec, Ratio, Budget, allocate
    >>> structure = load_structure("llava-1.5-7b")
    >>> result = allocate(structure, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    >>> result.components["projector"].rank
    32

    calculator/     model structure from configs, architecture registry, spec, allocation solver, LoraConfig, presets
    data/           VQA sources (datasets / JSONL / synthetic), prompting and family-aware batches, data hygiene
    training/       settings, model loading, the engine, checkpoints, distributed launch, the demo model
    queue/          the job queue: SQLite store, worker, executors (local, Slurm), follow-up hooks; knows no studies
    study/          above the queue: sweeps, designs, successive halving, confirmation, time estimates, progress
    evaluation/     evaluate, official VQA scoring, statistics, comparison, recommendation, retrieval, charts
    hub/            publish to the Hugging Face Hub, model card
    interop/        export for evaluation harnesses, import of lmms-eval outputs
    cli/            one module per command (`python -m toolkit <command>`)
    jobs/           compatibility only: module paths that jobs and sbatch scripts written before still name
    runs.py         the one owner of the run folder (cmba.json, metrics, checkpoints, evaluations)
    outcomes.py     exit codes and reasons, and how a step's outcome maps to a job state
    errors.py       the errors a user can act on (one-line messages)
    fields.py       the settings machinery (pydantic): fields with flags, bounds, choices, docs; one-line errors
    paths.py        where the jobs/ and adapters/ workspaces live (overridable by environment variables)
    progressbar.py  progress of long work: a tqdm bar on a terminal, plain lines otherwise
    tensorfile.py   safetensors checked without loading them, and file digests
    version.py      the version number, in one place
    __main__.py     `python -m toolkit`
    distributed.py  slurm.py   entry points kept for jobs and sbatch scripts written before the package layout
"""

from toolkit.training.processors import hide_broken_torchvision

hide_broken_torchvision()  # before transformers is imported: a torchvision built for another torch breaks it

from toolkit.calculator.allocation import Allocation, allocate, audit  # noqa: E402
from toolkit.calculator.spec import AllocationSpec, AlphaRule, Budget, Ratio, Targets  # noqa: E402
from toolkit.calculator.structure import ModelStructure, load_structure  # noqa: E402
from toolkit.errors import BudgetError, CmbaError, InputError, ModelLoadError, UnsupportedModelError  # noqa: E402
from toolkit.version import __version__  # noqa: E402

__all__ = [
    "__version__",
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
