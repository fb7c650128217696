"""Did-you-mean: the closest real names to a wrong one, and whether one is clearly it.

Closeness is an edit distance in which swapping two neighbouring letters counts as
one slip (``hieght``), and a name may be off by about one slip per three letters.
Ratios of common letters are too generous for short names (``later`` is not a slip
of ``aiter``); counting slips is what people mean by a typo.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["clear_winner", "close_matches", "slips"]

MAX_POOL = 5000
"""Candidates looked at, at most (a DataFrame can have many columns, a folder many files)."""


def _squash(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "").replace(" ", "")


LONGEST = 64
"""Longer words (a key that is a sentence) are only matched by case and separators: counting
slips costs the product of the lengths."""


def _cut_short(word: str, name: str) -> bool:
    return len(word) >= 4 and len(word) >= 0.6 * len(name) and name.lower().startswith(word.lower())


def allowed_slips(word: str) -> int:
    return max(1, len(word) // 3) if 2 < len(word) <= LONGEST else 0


def slips(a: str, b: str, limit: int) -> int:
    """Edits (insert, delete, replace, swap neighbours) from ``a`` to ``b``; ``limit + 1`` once past ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def close_matches(word: str, pool: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names from ``pool`` that ``word`` was probably meant to be, best first.

    Same letters in another case (``region`` for ``Region``) or without separators
    (``salesdata`` for ``sales_data``) rank first; then the fewest slips. Names of one
    or two letters only match in those first two ways: ``x`` is not a typo of ``y``.
    """
    names: list[str] = []
    seen: set[str] = set()
    for name in pool:
        if isinstance(name, str) and name != word and name not in seen:
            seen.add(name)
            names.append(name)
            if len(names) >= MAX_POOL:
                break
    lower, squashed = word.lower(), _squash(word)
    exact = [nm for nm in names if nm.lower() == lower]
    loose = [nm for nm in names if nm not in exact and _squash(nm) == squashed]
    # A word cut short (``ascend`` for ``ascending``): most of the name, four letters or more.
    # ``week`` is not ``weekday`` cut short: it is another thing (pandas removed ``.dt.week``).
    short = [nm for nm in names if _cut_short(word, nm) and nm not in exact + loose]
    ranked = exact + loose + sorted(short, key=len)
    limit = allowed_slips(word)
    if limit:
        scored = []
        for nm in names:
            if nm in ranked or len(nm) > LONGEST:
                continue
            distance = slips(lower, nm.lower(), limit)
            if distance <= limit:
                scored.append((distance, nm))
        ranked += [nm for _, nm in sorted(scored)]
    return ranked[:n]


def clear_winner(word: str, matches: list[str]) -> str | None:
    """The one match a fix may use: case/separator-equal and alone, or strictly fewer slips than the next."""
    if not matches:
        return None
    best = matches[0]
    for same in (lambda m: _squash(m) == _squash(word), lambda m: _cut_short(word, m)):
        if same(best):
            return None if any(same(m) for m in matches[1:]) else best
    if len(matches) == 1:
        return best
    limit = allowed_slips(word)
    first, second = (slips(word.lower(), m.lower(), limit) for m in matches[:2])
    return best if first < second else None
