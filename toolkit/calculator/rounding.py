"""Exact budgets: continuous component ranks, then per-module integer ranks that land on the budget.

The solver in `allocation.py` first finds fractional component ranks r_c that meet the budget exactly
(`continuous_rank_mode` / `continuous_share_mode`, caps and the rank-1 floor included). `mixed_module_ranks`
then gives each component's modules a deterministic mix of floor(r) and ceil(r): an error-diffusion pass over
the modules in model order (depth-major, module kinds interleaved within a layer), weighted by each module's
cost per rank, so the ⌈r⌉ modules are spread evenly over depth and kind and the component's cost-weighted mean
rank equals r_c to within half of one module's cost.

    >>> ideal, notes = continuous_rank_mode(mods, {"vision": 1, "projector": 4, "language": 1}, budget)
    >>> ranks = mixed_module_ranks(mods, ideal)          # {module name: int rank}
    >>> granularity(mods, budget)                        # the smallest error in % the module sizes allow

Uniform integer ranks per component (the older behaviour) stay available as `rounding="uniform"`.
"""

from __future__ import annotations

import math


def cost(modules, rank: float) -> float:
    """LoRA parameters of these modules at a (possibly fractional) component rank, caps applied."""
    return sum(m.cost_per_rank * min(rank, m.max_rank) for m in modules)


def invert(groups, target: float) -> float:
    """Solve sum_c cost(modules_c, s * w_c) = target for s (piecewise linear, increasing)."""
    points = sorted((m.max_rank / w, m.cost_per_rank * w) for w, mods in groups for m in mods)
    slope = sum(d for _, d in points)
    s_prev, f_prev = 0.0, 0.0
    for s_break, d in points:
        f_break = f_prev + slope * (s_break - s_prev)
        if f_break >= target:
            return s_prev + (target - f_prev) / slope
        s_prev, f_prev, slope = s_break, f_break, slope - d
    return s_prev  # target above the all-full-rank maximum: callers check that first


def continuous_rank_mode(mods, weights, budget) -> tuple[dict[str, float], list[str]]:
    """Fractional ranks r_c = s x w_c meeting the budget exactly; a component below rank 1 is raised to 1
    and s re-solved for the others, so the raise is paid for by them rather than added to the budget."""
    pinned: dict[str, float] = {}
    notes = []
    while True:
        free = [c for c in mods if c not in pinned]
        rest = budget - sum(cost(mods[c], r) for c, r in pinned.items())
        s = invert([(weights[c], mods[c]) for c in free], rest)
        low = [c for c in free if s * weights[c] < 1]
        if not low or len(low) == len(free):
            break
        c = min(low, key=lambda c: weights[c])
        notes.append(f"{c}: the ratio asks for rank {s * weights[c]:.2f}; raised to 1, the minimum (the ratio is not kept)")
        pinned[c] = 1.0
    ideal = dict(pinned)
    for c in free:
        ideal[c] = max(1.0, s * weights[c])
        cap = max(m.max_rank for m in mods[c])
        if ideal[c] >= cap:
            notes.append(f"{c}: every module is at its rank cap (max {cap}); the other components took the rest "
                         "of the budget")
    return ideal, notes


def mixed_module_ranks(mods, ideal: dict[str, float]) -> dict[str, int]:
    """Integer rank per module name: floor/ceil of min(r_c, cap) by cost-weighted error diffusion."""
    out = {}
    for comp, modules in mods.items():
        carry = 0.0  # target cost minus assigned cost so far, in parameters
        low = {}
        for m in modules:
            target = min(ideal[comp], m.max_rank)
            low[m.name] = max(1, math.floor(target + 1e-9))
            carry += (target - low[m.name]) * m.cost_per_rank
            if carry >= m.cost_per_rank / 2 and low[m.name] < m.max_rank:
                out[m.name] = low[m.name] + 1
                carry -= m.cost_per_rank
            else:
                out[m.name] = low[m.name]
        _settle(modules, out, low, carry)
    return out


def _settle(modules, out: dict[str, int], low: dict[str, int], deficit: float) -> None:
    """Where a component has few, unequal modules, diffusion can end a module away from its target: bump,
    drop or swap single modules (by cost class, the middle one of a class) while that shrinks |deficit|."""
    for _ in range(8):
        up, down = {}, {}  # cost per rank -> modules that can go up / come down
        for m in modules:
            if out[m.name] == low[m.name] and low[m.name] < m.max_rank:
                up.setdefault(m.cost_per_rank, []).append(m)
            elif out[m.name] > low[m.name]:
                down.setdefault(m.cost_per_rank, []).append(m)
        moves = [(abs(deficit - cu), (cu,), ()) for cu in up] + [(abs(deficit + cd), (), (cd,)) for cd in down]
        moves += [(abs(deficit - cu + cd), (cu,), (cd,)) for cu in up for cd in down if cu != cd]
        if not moves:
            return
        best, ups, downs = min(moves)
        if best >= abs(deficit) - 1e-9:
            return
        for cu in ups:
            m = up[cu][len(up[cu]) // 2]
            out[m.name] += 1
            deficit -= cu
        for cd in downs:
            m = down[cd][len(down[cd]) // 2]
            out[m.name] -= 1
            deficit += cd


def granularity(mods, budget: int) -> float:
    """The budget error (%) that one rank step of the largest module per component allows at worst."""
    return 100.0 * sum(max(m.cost_per_rank for m in modules) / 2 for modules in mods.values()) / budget


def mean_rank(module_allocs) -> float:
    """Cost-weighted mean rank over a component's modules below their cap (all modules if every one is capped):
    the quantity the ratio governs, since a capped module's rank follows its shape, not the ratio."""
    free = [m for m in module_allocs if not m.capped] or list(module_allocs)
    weight = sum(m.in_features + m.out_features for m in free)
    return sum(m.rank * (m.in_features + m.out_features) for m in free) / weight if weight else 0.0


def rank_step(module_allocs) -> float:
    """How much one rank step of the largest uncapped module moves the component's mean rank."""
    free = [m for m in module_allocs if not m.capped] or list(module_allocs)
    weight = sum(m.in_features + m.out_features for m in free)
    return max(m.in_features + m.out_features for m in free) / weight if weight else 0.0


def granularity_notes(components, tolerance: float = 0.05) -> list[str]:
    """Where a component's mean rank misses its target by more than `tolerance` (relative), say that its
    module sizes allow no closer (a one-module projector cannot take rank 4.7)."""
    out = []
    for c in components.values():
        if c.full or not c.target_rank or c.capped_modules == c.modules:
            continue
        miss = c.mean_rank / c.target_rank - 1
        if abs(miss) > tolerance:
            out.append(f"{c.component}: mean rank {c.mean_rank:.3g} for the {c.target_rank:.3g} the ratio asks "
                       f"({100 * miss:+.1f}%): one rank step of its largest module moves its mean rank by "
                       f"{c.rank_step:.2f}, the finest its module sizes allow")
    return out
