"""The budget solver: per-module LoRA ranks for a ratio at a fixed parameter budget.

    >>> from toolkit import load_structure, allocate, audit, AllocationSpec, Ratio, Budget
    >>> s = load_structure("llava-1.5-7b")
    >>> a = allocate(s, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    >>> a.ranks_label(), round(a.budget_error, 2)        # mixed rounding (default): budget-exact
    ('7.89:31.6:7.89', 0.01)
    >>> allocate(s, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8), rounding="uniform")).ranks()
    (8, 32, 8)
    >>> audit(s, (4, 16, 4), budget=Budget("rank", 8)).budget_error   # hand-picked: about half the budget
    -49.32...

LoRA on a module costs r x (in + out). Rank mode puts r_c = s x w_c for each component and solves the
scale s so the total meets the budget; share mode gives each component w_c / sum(w) of the budget and
solves each rank from its share. Per-module ranks are capped at min(in, out) and where LoRA would cost more
than full fine-tuning; capped budget in share mode is redistributed; a component below rank 1 is raised
to 1 and paid for by the others. `rounding="mixed"` (default) then gives each component's modules a floor/
ceil mix (`toolkit.calculator.rounding`) so the total lands within 0.5 % of the budget (or states the
granularity limit); `rounding="uniform"` chooses one integer rank per component among the roundings (and
exact multiples of the ratio) to minimise |budget error| + ratio distortion, so 1:4:1 stays 8:32:8.
`full_finetune=("projector",)` trains a component fully (PEFT `modules_to_save`) at its true cost, paid
from the same budget.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from itertools import product

from toolkit.calculator import rounding
from toolkit.calculator.architectures import COMPONENTS, NO_LINEAR, serving_note
from toolkit.calculator.checks import BUDGET_TOLERANCE
from toolkit.calculator.result import Allocation, ComponentAllocation, ModuleAllocation
from toolkit.calculator.spec import AllocationSpec, AlphaRule, Budget, Targets
from toolkit.calculator.structure import LinearModule, ModelStructure
from toolkit.errors import BudgetError, InputError

EXACT_TOLERANCE = 0.5
"""mixed rounding lands within this |budget error| in % (or states the granularity limit)"""


# ---------------------------------------------------------------------------------------------- costs


_cost = rounding.cost
_invert = rounding.invert


def resolve_budget(structure: ModelStructure, budget: Budget, targets: Targets) -> int:
    """The budget in parameters. A rank budget counts every targeted module of all three components."""
    if budget.kind == "params":
        return int(budget.value)
    if budget.kind == "percent":
        return round(budget.value / 100 * structure.total_params)
    return round(budget.value * sum(structure.cost_per_rank(c, targets.kind(c)) for c in COMPONENTS))


def _targeted(structure: ModelStructure, targets: Targets, active: list[str]) -> dict[str, list[LinearModule]]:
    out = {}
    for comp in active:
        mods = structure.linears(comp, targets.kind(comp))
        if not mods and (why := NO_LINEAR.get((structure.model_type, comp))):
            raise InputError(f"ratio: {why}")
        if not mods:
            raise InputError(
                f"targets.{comp}: '{targets.kind(comp)}' selects no Linear layer in the {comp} part of "
                f"{structure.model_id}; allowed here: {', '.join(structure.kinds_available(comp))}"
            )
        out[comp] = mods
    return out


# ---------------------------------------------------------------------------------------------- solver


def _exact_ratio_unit(weights: dict[str, float]) -> dict[str, int] | None:
    """Smallest integer vector proportional to the weights, if they are simple fractions (1:4:1 -> 1,4,1)."""
    fracs = {}
    for c, w in weights.items():
        f = Fraction(w).limit_denominator(20)
        if abs(float(f) - w) > 1e-9 * max(1.0, w):
            return None
        fracs[c] = f
    lcm = math.lcm(*(f.denominator for f in fracs.values()))
    ints = {c: int(f * lcm) for c, f in fracs.items()}
    g = math.gcd(*ints.values())
    return {c: v // g for c, v in ints.items()}


def _spread(values: list[float]) -> float:
    """Relative spread (max - min) / (max + min): 0 when all equal."""
    if len(values) < 2:
        return 0.0
    hi, lo = max(values), min(values)
    return (hi - lo) / (hi + lo) if hi + lo > 0 else 0.0


def _candidates(mods, ideal, cap, budget, pinned) -> set[tuple]:
    """Integer rank vectors near the continuous solution.

    Every floor/ceil combination, plus, for each free component, the combinations of the others with this
    one re-solved to absorb what rounding the others cost (its floor and ceil), so a fine-grained component
    can bring the total back to the budget. Pinned components (raised to rank 1, or at full rank) keep
    their rank: absorbing budget there would break the ratio they were pinned for.
    """

    def clamp(c, r):
        return max(1, min(cap[c], int(r)))

    options = {
        c: [int(pinned[c])] if c in pinned else sorted({clamp(c, math.floor(ideal[c])), clamp(c, math.ceil(ideal[c]))})
        for c in mods
    }
    out = {tuple(zip(mods, combo)) for combo in product(*(options[c] for c in mods))}
    for absorber in (c for c in mods if c not in pinned):
        others = [c for c in mods if c != absorber]
        for combo in product(*(options[c] for c in others)):
            fixed = dict(zip(others, combo))
            rest = budget - sum(_cost(mods[c], r) for c, r in fixed.items())
            if rest <= 0:
                continue
            r_abs = _invert([(1.0, mods[absorber])], rest)
            for r in {clamp(absorber, math.floor(r_abs)), clamp(absorber, math.ceil(r_abs))}:
                out.add(tuple((c, r if c == absorber else fixed[c]) for c in mods))
    return out


def _solve_rank_mode(mods, weights, budget):
    """Ranks proportional to the weights. Returns (ranks, notes)."""
    s = _invert([(weights[c], mods[c]) for c in mods], budget)
    cap = {c: max(m.max_rank for m in mods[c]) for c in mods}
    ideal = {c: s * weights[c] for c in mods}
    notes = []
    for c in mods:
        if ideal[c] < 1:
            notes.append(f"{c}: the ratio asks for rank {ideal[c]:.2f}; raised to 1, the minimum (the ratio is not kept)")
        elif ideal[c] >= cap[c]:
            notes.append(f"{c}: every module is at its rank cap (max {cap[c]}); the other components took the rest "
                         "of the budget")
    free = [c for c in mods if 1 <= ideal[c] < cap[c]]
    pinned = {c: (1 if ideal[c] < 1 else cap[c]) for c in mods if c not in free}

    def clamp(c, r):
        return max(1, min(cap[c], int(r)))

    candidates = _candidates(mods, ideal, cap, budget, pinned)
    unit = _exact_ratio_unit({c: weights[c] for c in mods})
    if unit and free:
        ref = free[0]
        t0 = ideal[ref] / unit[ref]
        for t in {max(1, math.floor(t0)), max(1, math.ceil(t0))}:
            candidates.add(tuple((c, pinned.get(c, clamp(c, t * unit[c]))) for c in mods))

    def score(cand):
        ranks = dict(cand)
        total = sum(_cost(mods[c], ranks[c]) for c in mods)
        distortion = _spread([ranks[c] / weights[c] for c in free])
        return (abs(total - budget) / budget + distortion, abs(total - budget))

    return dict(min(candidates, key=score)), notes


def _share_ideal(mods, weights, budget):
    """Fractional ranks whose costs are shares of the budget proportional to the weights, capped budget
    redistributed. Returns (ideal, pinned, notes)."""
    cap = {c: max(m.max_rank for m in mods[c]) for c in mods}
    full = {c: _cost(mods[c], cap[c]) for c in mods}
    floor_cost = {c: _cost(mods[c], 1) for c in mods}
    pinned: dict[str, float] = {}
    notes = []
    while True:
        free = [c for c in mods if c not in pinned]
        remaining = budget - sum(_cost(mods[c], r) for c, r in pinned.items())
        wsum = sum(weights[c] for c in free)
        want = {c: remaining * weights[c] / wsum for c in free}
        # Caps first: a capped component's excess raises the others' shares, which may lift them above
        # rank 1, so floors are only decided once no component is over its cap.
        newly = {c: cap[c] for c in free if want[c] > full[c]}
        if not newly:
            newly = {c: 1 for c in free if want[c] < floor_cost[c]}
        if not newly:
            break
        pinned.update(newly)
        for c, r in newly.items():
            asked = budget * weights[c] / sum(weights.values())
            if r == cap[c]:
                notes.append(
                    f"{c}: its share ({asked:,.0f} params) exceeds LoRA at full rank on its modules "
                    f"({full[c]:,} params); the excess was redistributed to the other components"
                )
            else:
                notes.append(f"{c}: its share ({asked:,.0f} params) is below rank 1 on every module; raised to rank 1")
    ideal = dict(pinned)
    for c in free:
        ideal[c] = _invert([(1.0, mods[c])], want[c])
    return ideal, pinned, notes


def _solve_share_mode(mods, weights, budget):
    """Parameter shares proportional to the weights, one integer rank per component."""
    cap = {c: max(m.max_rank for m in mods[c]) for c in mods}
    ideal, pinned, notes = _share_ideal(mods, weights, budget)
    target_share = {c: _cost(mods[c], ideal[c]) / budget for c in mods}

    def score(cand):
        costs = {c: _cost(mods[c], r) for c, r in cand}
        total = sum(costs.values())
        distortion = max(abs(costs[c] / total - target_share[c]) for c in mods)
        # Shares are approximate by nature (one rank step of a large component is coarse): weigh the
        # budget match twice as much as the share distortion.
        return (abs(total - budget) / budget + 0.5 * distortion, abs(total - budget))

    return dict(min(_candidates(mods, ideal, cap, budget, pinned), key=score)), notes


# ---------------------------------------------------------------------------------------------- results


def _build(structure, mods, ranks, *, mode, ratio, budget, budget_spec, targets, alpha_rule, notes,
           module_ranks=None, ideal=None, full_mods=None, rounding_used="uniform", granularity=None) -> Allocation:
    """The allocation record. `ranks`: component -> nominal rank; `module_ranks`: name -> rank where modules
    of a component differ (mixed rounding); `full_mods`: component -> modules trained fully."""
    module_allocs = []
    full_mods = full_mods or {}
    for comp in COMPONENTS:
        for m in full_mods.get(comp, []):
            module_allocs.append(ModuleAllocation(
                name=m.name, component=comp, kind=m.kind, in_features=m.in_features, out_features=m.out_features,
                rank=0, alpha=0, params=m.full_params, capped=False, full_cheaper=False, full=True))
        for m in mods.get(comp, []):
            wanted = module_ranks[m.name] if module_ranks else ranks[comp]
            r = min(wanted, m.max_rank)
            params = m.cost_per_rank * r
            module_allocs.append(
                ModuleAllocation(
                    name=m.name, component=comp, kind=m.kind, in_features=m.in_features, out_features=m.out_features,
                    rank=r, alpha=alpha_rule.alpha(r), params=params,
                    capped=(ideal or ranks)[comp] > m.max_rank,
                    full_cheaper=params >= m.full_params,
                )
            )
    total = sum(m.params for m in module_allocs)
    model_size = sum(structure.component_params.values()) or 1
    components = {}
    for comp in COMPONENTS:
        mine = [m for m in module_allocs if m.component == comp]
        full = comp in full_mods
        rank = 0 if full else ranks.get(comp, 0)
        components[comp] = ComponentAllocation(
            component=comp, weight=ratio[COMPONENTS.index(comp)], target_kind=targets.kind(comp), rank=rank,
            alpha=alpha_rule.alpha(rank) if rank else 0, params=sum(m.params for m in mine), modules=len(mine),
            share_of_budget=sum(m.params for m in mine) / total if total else 0.0,
            share_of_model=structure.component_params[comp] / model_size,
            capped_modules=sum(m.capped for m in mine),
            mean_rank=rounding.mean_rank(mine) if mine and not full else 0.0, full=full,
            target_rank=0.0 if full or comp not in mods else float((ideal or ranks)[comp]),
            rank_step=rounding.rank_step(mine) if mine and not full else 0.0,
        )
    if ideal:
        notes = notes + rounding.granularity_notes(components)
    return Allocation(
        model=structure.model_id, model_type=structure.model_type, family=structure.family, mode=mode,
        ratio=tuple(ratio), budget=budget, budget_spec=budget_spec, total=total,
        budget_error=None if budget is None else 100.0 * (total - budget) / budget,
        achieved_ratio=_achieved_ratio(mode, ratio, components),
        components=components, modules=tuple(module_allocs),
        warnings=tuple(notes + _warnings(structure, module_allocs, ranks)), targets=targets, alpha_rule=alpha_rule,
        rounding=rounding_used, granularity=granularity,
    )


def _achieved_ratio(mode, ratio, components) -> tuple[float, float, float]:
    """Ranks (rank/audit mode) or params (share mode), scaled so the smallest requested weight is kept."""
    value = {c: (a.params if mode == "share" else a.mean_rank) for c, a in components.items()}
    active = [c for c in COMPONENTS if ratio[COMPONENTS.index(c)] > 0 and value[c] > 0 and not components[c].full]
    if not active:
        return (0.0, 0.0, 0.0)
    ref = min(active, key=lambda c: ratio[COMPONENTS.index(c)])
    scale = ratio[COMPONENTS.index(ref)] / value[ref]
    return tuple(round(value[c] * scale, 4) for c in COMPONENTS)


def _warnings(structure, module_allocs, ranks) -> list[str]:
    out = []
    for comp in COMPONENTS:
        capped = [m for m in module_allocs if m.component == comp and m.capped]
        if capped:
            ex = capped[0]
            out.append(
                f"{comp}: {len(capped)} module(s) capped at min(in, out) or where LoRA stops being cheaper than training "
                f"the layer, because rank {ranks[comp]} exceeds it (e.g. {ex.name} at {ex.rank}); higher ranks "
                "would add parameters, not capacity"
            )
        dear = [m for m in module_allocs if m.component == comp and m.full_cheaper]
        if dear:
            ex = dear[0]
            out.append(
                f"{comp}: LoRA on {len(dear)} module(s) costs as much as training them fully (e.g. {ex.name}: "
                f"{ex.params:,} LoRA params vs {ex.in_features * ex.out_features:,} weights); consider full fine-tuning"
            )
    if structure.dead:
        reasons = sorted({m.excluded_reason.split(":", 1)[1].strip() for m in structure.dead})
        out.append(f"{len(structure.dead)} dead module(s) excluded from the budget: {reasons[0]}"
                   + (f" (+{len(reasons) - 1} more reasons)" if len(reasons) > 1 else ""))
    non_language = [c for c in ("vision", "projector") if ranks.get(c) and not any(
        m.full for m in module_allocs if m.component == c)]
    if non_language:
        out.append(serving_note(structure.model_type, non_language))
    return out


def allocate(structure: ModelStructure, spec: AllocationSpec) -> Allocation:
    """Solve per-module ranks for `spec` on `structure` (see module docstring)."""
    full = spec.full_finetune
    weights = {c: spec.ratio.weight(c) for c in COMPONENTS if spec.ratio.weight(c) > 0 and c not in full}
    mods = _targeted(structure, spec.targets, list(weights))
    full_mods = {c: structure.linears(c) for c in full}
    budget = resolve_budget(structure, spec.budget, spec.targets)
    full_cost = sum(m.full_params for ms in full_mods.values() for m in ms)
    lora_budget = budget - full_cost
    minimum = sum(_cost(mods[c], 1) for c in mods)
    maximum = sum(_cost(mods[c], max(m.max_rank for m in mods[c])) for c in mods)
    paid = f" after {full_cost:,} params of full fine-tuning ({', '.join(full)})" if full else ""
    if lora_budget < minimum:
        raise BudgetError(
            f"budget: {budget:,} params{paid} is below the minimum of {minimum:,} LoRA params for this ratio "
            f"(every targeted module at rank 1)"
        )
    if lora_budget > maximum:
        raise BudgetError(
            f"budget: {budget:,} params{paid} is above the maximum of {maximum:,} LoRA params (every targeted "
            "module at its rank cap: min(in, out), or where LoRA would cost more than full fine-tuning); fully "
            "fine-tune a component instead or lower the budget"
        )
    module_ranks = ideal = None
    if spec.rounding == "mixed":
        if spec.mode == "rank":
            ideal, notes = rounding.continuous_rank_mode(mods, weights, lora_budget)
        else:
            ideal, _, notes = _share_ideal(mods, weights, lora_budget)
        module_ranks = rounding.mixed_module_ranks(mods, ideal)
        ranks = {c: max(1, round(ideal[c])) for c in mods}
    else:
        solver = _solve_rank_mode if spec.mode == "rank" else _solve_share_mode
        ranks, notes = solver(mods, weights, lora_budget)
    left_out = [c for c in COMPONENTS if spec.ratio.weight(c) == 0]
    notes = notes + [f"{c}: ratio 0 leaves it out (no LoRA; PEFT has no rank 0)" for c in left_out]
    notes += [f"{c}: fully fine-tuned (modules_to_save), {sum(m.full_params for m in full_mods[c]):,} params of "
              "the budget; its ratio weight is not used" for c in full]
    grain = rounding.granularity(mods, budget)
    a = _build(
        structure, mods, ranks, mode=spec.mode, ratio=spec.ratio.as_tuple(), budget=budget,
        budget_spec=str(spec.budget), targets=spec.targets, alpha_rule=spec.alpha, notes=notes,
        module_ranks=module_ranks, ideal=ideal, full_mods=full_mods, rounding_used=spec.rounding, granularity=grain,
    )
    if abs(a.budget_error) > BUDGET_TOLERANCE:
        a = replace(a, warnings=(
            f"budget error {a.budget_error:+.2f}% exceeds the {BUDGET_TOLERANCE:g}% study tolerance: sweeps refuse "
            "this arm" + (" (mixed rounding, the default, meets the budget)" if spec.rounding == "uniform" else ""),
        ) + a.warnings)
    if spec.rounding == "mixed" and abs(a.budget_error) > EXACT_TOLERANCE:
        a = replace(a, warnings=a.warnings + (
            f"budget error {a.budget_error:+.2f}% exceeds {EXACT_TOLERANCE}%: one rank step of the largest modules "
            f"is {grain:.2f}% of this budget, the smallest error the granularity allows",))
    return a


def audit(
    structure: ModelStructure,
    ranks: tuple[int, int, int],
    *,
    budget: Budget | None = None,
    targets: Targets | None = None,
    alpha: AlphaRule | None = None,
) -> Allocation:
    """What explicit per-component ranks (vision, projector, language; 0 = left out) cost.

    >>> audit(load_structure("llava-1.5-7b"), (8, 8, 8)).total
    23486464
    """
    targets = targets or Targets()
    alpha = alpha or AlphaRule()
    if len(ranks) != 3:
        raise InputError(f"ranks: expected three ranks V:P:L such as 4:16:4, got {len(ranks)} values")
    for comp, r in zip(COMPONENTS, ranks):
        if r < 0 or float(r) != int(r):
            raise InputError(f"ranks: the {comp} rank must be a whole number >= 0, got {r:g}")
    if not any(ranks):
        raise InputError("ranks: at least one of the vision, projector, language ranks must be > 0")
    given = {c: int(r) for c, r in zip(COMPONENTS, ranks) if r > 0}
    mods = _targeted(structure, targets, list(given))
    resolved = resolve_budget(structure, budget, targets) if budget else None
    return _build(
        structure, mods, given, mode="audit", ratio=tuple(float(r) for r in ranks), budget=resolved,
        budget_spec=str(budget) if budget else "none", targets=targets, alpha_rule=alpha, notes=[],
    )
