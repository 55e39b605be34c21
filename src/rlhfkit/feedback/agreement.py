"""Agreement between labellers: Cohen's κ per pair, Krippendorff's α overall, agreement with the majority.

Answers are treated as nominal categories (``LEFT``, ``RIGHT``, ``TIE``, ``BOTH_BAD``,
``CANT_TELL``, or a ranking's full order), in canonical item terms, so two people who saw a pair
with opposite sides agree when they prefer the same item. ``SKIP`` is no answer and is left out.

- Cohen (1960): ``κ = (p_o − p_e) / (1 − p_e)`` over the items both labellers answered, with
  ``p_o`` the observed agreement and ``p_e = Σ_c p_a(c) p_b(c)`` the agreement expected from their
  marginals.
- Krippendorff (2011, "Computing Krippendorff's alpha-reliability", nominal data):
  ``α = 1 − (n − 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k`` with the coincidence matrix
  ``o_ck = Σ_u (number of c–k pairs of values in unit u) / (m_u − 1)`` over units with
  ``m_u ≥ 2`` values, ``n_c = Σ_k o_ck`` and ``n = Σ_c n_c``. Handles any number of labellers
  and missing answers.
- Agreement with the majority: for each labeller, the fraction of their answers that match the
  plurality answer of the *other* labellers of the same query (leave-one-out; queries where the
  others split evenly are not counted).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

__all__ = ["AgreementReport", "agreement_report", "cohen_kappa", "krippendorff_alpha", "majority_agreement"]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's κ of two labellers' answers to the same ``N`` items (``a[i]``, ``b[i]`` of item i).

    Returns:
        κ in ``[-1, 1]``; NaN when chance agreement ``p_e`` is 1 (both used one same category).

    Raises:
        ValueError: if the lengths differ or there are no items.
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs answers to the same items, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("cohen_kappa needs at least one item")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if p_e >= 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def krippendorff_alpha(units: Iterable[Sequence[Hashable | None]]) -> float:
    """Krippendorff's α for nominal data.

    Args:
        units: one sequence per unit (query) of the values the coders gave it; ``None`` (or a
            shorter sequence) marks a missing value. Units with fewer than two values are not
            pairable and are ignored.

    Returns:
        α (1 perfect agreement, 0 chance level, < 0 systematic disagreement); NaN when fewer
        than two values are pairable or only one category occurs.
    """
    o: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nk - 1) if c == k else nc * nk  # ordered pairs from different coders
                if pairs:
                    o[(c, k)] += pairs / (m - 1)
    n_c: dict[Hashable, float] = defaultdict(float)
    for (c, _), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n < 2:
        return math.nan
    disagree = sum(v for (c, k), v in o.items() if c != k)
    expected = n * n - sum(x * x for x in n_c.values())  # Σ_{c≠k} n_c n_k
    if expected <= 0:
        return math.nan
    return 1.0 - (n - 1) * disagree / expected


def majority_agreement(answers: dict[Hashable, dict[str, Hashable]]) -> dict[str, tuple[float, int]]:
    """Each labeller's agreement with the leave-one-out plurality of the other labellers.

    Args:
        answers: ``{query: {labeller: answer}}``.

    Returns:
        ``{labeller: (fraction agreeing, number of queries counted)}``; the fraction is NaN for
        a labeller with no countable query.
    """
    hits: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    names: set[str] = set()
    for by_labeller in answers.values():
        names.update(by_labeller)
        if len(by_labeller) < 2:
            continue
        for who, ans in by_labeller.items():
            others = Counter(v for w, v in by_labeller.items() if w != who)
            top = max(others.values())
            modes = [v for v, c in others.items() if c == top]
            if len(modes) != 1:
                continue
            counted[who] += 1
            hits[who] += ans == modes[0]
    return {w: (hits[w] / counted[w] if counted[w] else math.nan, counted[w]) for w in sorted(names)}


@dataclass
class AgreementReport:
    """Agreement statistics of a store's answers (see the module docstring)."""

    labels_per_labeller: dict[str, int]
    """Answers (SKIP excluded) given by each labeller."""
    multi_labelled: int
    """Queries answered by two or more labellers."""
    kappa: list[tuple[str, str, int, float]] = field(default_factory=list)
    """``(labeller a, labeller b, items both answered, Cohen's κ)`` for each pair with common items."""
    alpha: float = math.nan
    """Krippendorff's α (nominal) over every query."""
    majority: dict[str, tuple[float, int]] = field(default_factory=dict)
    """``{labeller: (agreement with the others' majority, queries counted)}``."""


def agreement_report(labels: Iterable[object]) -> AgreementReport:
    """Compute the agreement statistics from stored labels.

    Args:
        labels: :class:`~rlhfkit.feedback.store.Label` records (``store.labels()``): anything
            with ``query_id``, ``labeller``, ``outcome`` and ``ranking`` attributes.
    """
    answers: dict[int, dict[str, Hashable]] = defaultdict(dict)
    per: Counter[str] = Counter()
    for lab in labels:
        outcome = lab.outcome  # type: ignore[attr-defined]
        if outcome == "SKIP":
            continue
        value: Hashable = outcome if outcome != "RANKING" else tuple(lab.ranking or ())  # type: ignore[attr-defined]
        answers[lab.query_id][lab.labeller] = value  # type: ignore[attr-defined]
        per[lab.labeller] += 1  # type: ignore[attr-defined]
    multi = {q: a for q, a in answers.items() if len(a) >= 2}
    kappas = []
    for x, y in combinations(sorted(per), 2):
        common = [q for q, a in multi.items() if x in a and y in a]
        if common:
            kappas.append((x, y, len(common), cohen_kappa([multi[q][x] for q in common],
                                                          [multi[q][y] for q in common])))
    alpha = krippendorff_alpha(list(a.values()) for a in answers.values())
    return AgreementReport(dict(sorted(per.items())), len(multi), kappas, alpha, majority_agreement(multi))
