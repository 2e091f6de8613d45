"""The budget calculator: a VLM's structure from its config, the allocation solver, the LoraConfig export.

    structure.py      read any VLM from its config on the meta device; classify every Linear
    architectures.py  the per-family registry of component patterns and dead-module rules
    spec.py           what the user asks for: ratio, budget, targets, alpha rule, mode
    settings.py       the model and allocation groups of the settings tree (what `allocate` takes, `train` composes)
    allocation.py     the solver: per-module ranks that meet the budget and keep the ratio
    rounding.py       exact budgets: continuous component ranks, then per-module floor/ceil mixes
    result.py         the answer's records: ModuleAllocation, ComponentAllocation, Allocation
    checks.py         study checks: budget tolerance, duplicate arms, equal spend across runs
    loraconfig.py     the `peft.LoraConfig` export and PEFT's own parameter count
    report.py         tables and comparisons for the calculator page and the CLI
    presets/          bundled configs (offline), including the tiny `demo` model's
"""
