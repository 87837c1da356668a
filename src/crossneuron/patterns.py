"""Patterns (SPEC 3): p x p boolean arrays, True = computed, identified by integer codes.

Bit ``i * p + j`` of a code is set when position (i, j) is computed. The all-false and all-true
patterns are never patterns (one predicts nothing, the other could never be checked).
"""

from __future__ import annotations

import itertools
import math

import torch

from .errors import CrossneuronError

MIN_P, MAX_P = 2, 5


def check_patch_size(p: int) -> int:
    """Return ``p`` if it is a usable patch size (an int, 2 to 5), else raise one clear error."""
    if isinstance(p, bool) or not isinstance(p, int):
        raise CrossneuronError(f"patch size must be an integer from {MIN_P} to {MAX_P}, got {p!r}")
    if not MIN_P <= p <= MAX_P:
        raise CrossneuronError(
            f"patch size must be from {MIN_P} to {MAX_P} (a p x p patch with 2^(p*p) zero patterns), got {p}"
        )
    return p


def check_ones(p: int, ones: tuple[int, int] | None) -> tuple[int, int]:
    """Validate a ``(a, b)`` range of ones per pattern; ``None`` means every pattern (1 .. p*p-1)."""
    check_patch_size(p)
    top = p * p - 1
    if ones is None:
        return 1, top
    try:
        a, b = (int(v) for v in ones)
    except (TypeError, ValueError):
        raise CrossneuronError(f"ones range must be two integers (a, b), got {ones!r}") from None
    if a > b:
        raise CrossneuronError(f"ones range {a}-{b} is empty: need a <= b")
    if a < 1 or b > top:
        raise CrossneuronError(
            f"ones range {a}-{b} is outside 1-{top} for p={p}: a pattern needs at least one computed "
            f"and at least one predicted position"
        )
    return a, b


def code_to_pattern(code: int, p: int) -> torch.Tensor:
    """The (p, p) bool pattern of ``code``."""
    check_patch_size(p)
    if not 0 < code < (1 << (p * p)) - 1:
        raise CrossneuronError(
            f"pattern code {code} is not a pattern for p={p}: codes run from 1 to {(1 << (p * p)) - 2}"
        )
    bits = [(code >> k) & 1 for k in range(p * p)]
    return torch.tensor(bits, dtype=torch.bool).reshape(p, p)


def pattern_to_code(pattern: torch.Tensor) -> int:
    """The integer code of a (p, p) bool pattern."""
    pattern = torch.as_tensor(pattern)
    if pattern.dim() != 2 or pattern.shape[0] != pattern.shape[1]:
        raise CrossneuronError(f"a pattern is a square (p, p) array, got shape {tuple(pattern.shape)}")
    p = check_patch_size(pattern.shape[0])
    flat = pattern.reshape(-1).bool().tolist()
    code = sum(1 << k for k, v in enumerate(flat) if v)
    if code == 0 or code == (1 << (p * p)) - 1:
        raise CrossneuronError("all-false and all-true arrays are not patterns (SPEC 3)")
    return code


def ones_of(code: int) -> int:
    """Number of computed positions in the pattern with this code."""
    return bin(code).count("1")


# --patterns: which patterns a search ranges over; permutations+ones (0.13): the p! permutations and every
# pattern in the ones range (e.g. --ones 1-2: the diagonal's share or sparser, the search choosing per site)
FAMILIES = ("all", "permutations", "permutations+ones")


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise CrossneuronError(f"unknown pattern family '{family}': choose {', '.join(FAMILIES)}")
    return family


def _permutation_codes(p: int) -> list[int]:
    return sorted(sum(1 << (i * p + j) for i, j in enumerate(perm)) for perm in itertools.permutations(range(p)))


def pattern_codes(p: int, ones: tuple[int, int] | None = None, family: str = "all") -> list[int]:
    """Every pattern code for patch size ``p`` with a <= ones <= b, in increasing code order. ``family``
    ``permutations`` keeps only the p! patterns that compute exactly one position in every row and every
    column (the 2018 diagonal is one of them: each keeps the diagonal's share 1/p of the patch computed);
    the ones range must then include p. ``permutations+ones`` is their union with every pattern in the ones
    range (which then need not include p)."""
    a, b = check_ones(p, ones)
    n = p * p
    family = check_family(family)
    if family == "permutations":
        if not a <= p <= b:
            raise CrossneuronError(f"pattern family 'permutations' computes {p} positions per patch, outside the "
                                   f"ones range {a}-{b}: widen --ones or drop --patterns")  # fmt: skip
        return _permutation_codes(p)
    in_range = {sum(1 << i for i in bits) for k in range(a, b + 1) for bits in itertools.combinations(range(n), k)}
    if family == "permutations+ones":
        in_range.update(_permutation_codes(p))
    return sorted(in_range)


def pattern_count(p: int, ones: tuple[int, int] | None = None) -> int:
    """len(pattern_codes(p, ones)) without enumerating them."""
    a, b = check_ones(p, ones)
    return sum(math.comb(p * p, k) for k in range(a, b + 1))


def enumerate_patterns(p: int, ones: tuple[int, int] | None = None) -> torch.Tensor:
    """All patterns selected by ``ones`` as a (K, p, p) bool tensor, ordered by code."""
    codes = pattern_codes(p, ones)
    return torch.stack([code_to_pattern(c, p) for c in codes])


def diagonal(p: int) -> torch.Tensor:
    """The p x p identity: the 2018 paper's baseline pattern."""
    return torch.eye(check_patch_size(p), dtype=torch.bool)


def describe(code: int, p: int) -> str:
    """Rows of the pattern as text, '#' computed and '.' predicted: '#.|.#' for the 2x2 diagonal."""
    pat = code_to_pattern(code, p)
    return "|".join("".join("#" if v else "." for v in row) for row in pat.tolist())
