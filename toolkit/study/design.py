"""Study designs over the vision : projector : language simplex: which ratios a sweep trains.

    >>> d = Design.parse("simplex-lattice:3")            # {3, m} lattice: proportions i/m, 10 points for m = 3
    >>> d.ratios()                                        # ('0:0:1', '0:1:2', ..., '1:1:1', ..., '1:0:0')
    >>> Design.parse("simplex-centroid").ratios()         # the 7 centroids of the simplex's faces
    >>> Design.parse("simplex-lattice:2?floor=0.1").ratios()   # L-pseudo-components: every weight >= 0.1
    >>> keep, dropped = feasible(d.ratios(), allocate)    # arms the calculator cannot budget-match, with why

A {3, m} simplex-lattice has every point whose proportions are multiples of 1/m: C(m+2, 2) points. The
simplex-centroid design has the 2^3 - 1 centroids of the simplex's faces (vertices, edge mid-points, centre).
Both include vertices and edges, so some arms leave a component out (weight 0: no LoRA on it, which the
calculator allows). `floor=f` maps every point x to f + (1 - 3f)·x (the standard L-pseudo-component
transform of mixture designs with lower bounds), so every component keeps at least a share f of the ratio.
The uniform 1:1:1 arm, the study's baseline, is always in the design (added when the lattice lacks it).

Ratios are written as the smallest whole numbers with the point's proportions (2/3, 1/3, 0 -> '2:1:0'), so a
design sweep's arms read like hand-written ones and pool with them. Every arm is allocated by the calculator
at the sweep's budget (toolkit.study.sweep.plan_sweep): a point whose budget cannot be spent (a projector alone
cannot hold a whole model's budget under rank caps) is left out of the sweep with the calculator's reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from toolkit.errors import InputError

KINDS = ("simplex-lattice", "simplex-centroid")
MAX_DENSITY = 12
"""a {3, 12} lattice already has 91 arms"""


def _ratio_text(point: tuple[Fraction, Fraction, Fraction]) -> str:
    """Proportions -> the smallest whole-number ratio with them ('2:1:0')."""
    scale = math.lcm(*(p.denominator for p in point))
    ints = [int(p * scale) for p in point]
    g = math.gcd(*ints)
    return ":".join(str(i // g) for i in ints)


@dataclass(frozen=True)
class Design:
    """A mixture design over the three components (validated: bad values raise one-line InputErrors)."""

    kind: str
    """simplex-lattice | simplex-centroid"""
    density: int = 3
    """m of a {3, m} lattice: proportions are multiples of 1/m (ignored by the centroid design)"""
    floor: Fraction = Fraction(0)
    """lower bound of every proportion (L-pseudo-components), 0 <= floor < 1/3"""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"design: the kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if not isinstance(self.density, int) or not 1 <= self.density <= MAX_DENSITY:
            raise InputError(f"design: the lattice density must be a whole number in 1..{MAX_DENSITY}, "
                             f"got {self.density!r}")
        if not 0 <= self.floor < Fraction(1, 3):
            raise InputError(f"design: floor must be in [0, 1/3), got {float(self.floor):g}")

    @classmethod
    def parse(cls, text: str) -> Design:
        """'simplex-lattice:3', 'simplex-centroid', with an optional '?floor=0.1'."""
        raw = str(text or "").strip().lower()
        head, _, query = raw.partition("?")
        kind, _, density = head.partition(":")
        floor = Fraction(0)
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if key != "floor":
                raise InputError(f"design: unknown option '{key}' (allowed: floor=F, e.g. ?floor=0.1)")
            try:
                floor = Fraction(value).limit_denominator(1000)
            except (ValueError, ZeroDivisionError):
                raise InputError(f"design: floor '{value}' is not a number (e.g. ?floor=0.1)") from None
        if kind not in KINDS:
            raise InputError(f"design: expected simplex-lattice:M or simplex-centroid (optionally ?floor=F), got '{text}'")
        if kind == "simplex-centroid" and density:
            raise InputError("design: simplex-centroid takes no density (it has 7 points); use simplex-lattice:M")
        if kind == "simplex-lattice":
            if not density.strip().isdigit():
                raise InputError(f"design: simplex-lattice needs a whole-number density, e.g. simplex-lattice:3, got '{text}'")
            return cls(kind=kind, density=int(density), floor=floor)
        return cls(kind=kind, floor=floor)

    def __str__(self) -> str:
        head = self.kind + (f":{self.density}" if self.kind == "simplex-lattice" else "")
        return head + (f"?floor={float(self.floor):g}" if self.floor else "")

    def points(self) -> list[tuple[Fraction, Fraction, Fraction]]:
        """The design's proportions (each sums to 1), 1:1:1 included, before the floor transform."""
        if self.kind == "simplex-lattice":
            m = self.density
            pts = [(Fraction(i, m), Fraction(j, m), Fraction(m - i - j, m))
                   for i in range(m + 1) for j in range(m + 1 - i)]
        else:
            pts = []
            for mask in range(1, 8):
                members = [(mask >> c) & 1 for c in range(3)]
                pts.append(tuple(Fraction(b, sum(members)) for b in members))
        centre = (Fraction(1, 3),) * 3
        if centre not in pts:
            pts.append(centre)
        return pts

    def proportions(self) -> list[tuple[Fraction, Fraction, Fraction]]:
        """`points()` after the floor transform x -> f + (1 - 3f)·x (the centre stays the centre)."""
        f = self.floor
        return [tuple(f + (1 - 3 * f) * x for x in p) for p in self.points()]

    def ratios(self) -> tuple[str, ...]:
        """The arms as canonical 'V:P:L' texts (smallest whole numbers), de-duplicated, order kept."""
        return tuple(dict.fromkeys(_ratio_text(p) for p in self.proportions()))


def lattice_size(density: int) -> int:
    """Points of a {3, m} lattice: C(m + 2, 2)."""
    return math.comb(density + 2, 2)


def feasible(ratios, allocate: Callable[[str], object]) -> tuple[list[str], list[str]]:
    """(ratios the calculator can allocate, 'ratio: reason' for those it refuses). `allocate(ratio)` raises
    InputError when a budget cannot be met (e.g. a lone small component under rank caps)."""
    kept, dropped = [], []
    for ratio in ratios:
        try:
            allocate(ratio)
        except InputError as exc:
            dropped.append(f"{ratio}: {exc}")
        else:
            kept.append(ratio)
    return kept, dropped
