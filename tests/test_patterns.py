import math

import pytest
import torch

from crossneuron import patterns as pt
from crossneuron.errors import CrossneuronError


@pytest.mark.parametrize("p", [2, 3, 4, 5])
def test_counts_follow_binomials(p):
    n = p * p
    assert pt.pattern_count(p) == 2**n - 2
    if p <= 4:  # p = 5 has 33 million patterns: counted, not listed
        codes = pt.pattern_codes(p)
        assert len(codes) == 2**n - 2 and codes == sorted(set(codes)) and 0 not in codes
    assert len(pt.pattern_codes(p, (1, 2))) == math.comb(n, 1) + math.comb(n, 2) == pt.pattern_count(p, (1, 2))
    assert len(pt.pattern_codes(p, (n - 1, n - 1))) == n


@pytest.mark.parametrize("p", [2, 3, 4])
def test_codes_round_trip_and_bit_layout(p):
    for code in pt.pattern_codes(p, (1, 3)):
        pattern = pt.code_to_pattern(code, p)
        assert pt.pattern_to_code(pattern) == code
        i, j = divmod((code & -code).bit_length() - 1, p)  # lowest set bit is position (i, j)
        assert pattern[i, j]
    stack = pt.enumerate_patterns(p, (2, 2))
    assert stack.shape == (math.comb(p * p, 2), p, p) and torch.all(stack.sum((1, 2)) == 2)


@pytest.mark.parametrize("p", [2, 3, 4, 5])
def test_permutation_family_is_one_computed_position_per_row_and_column(p):
    codes = pt.pattern_codes(p, family="permutations")
    assert len(codes) == math.factorial(p) and codes == sorted(set(codes))
    assert pt.pattern_to_code(pt.diagonal(p)) in codes
    if p <= 4:  # brute force: every pattern with p ones whose rows and columns each hold exactly one
        brute = [c for c in pt.pattern_codes(p, (p, p))
                 if all(int(r) == 1 for r in pt.code_to_pattern(c, p).sum(0)) and
                 all(int(r) == 1 for r in pt.code_to_pattern(c, p).sum(1))]  # fmt: skip
        assert codes == brute
    assert pt.pattern_codes(p, (1, p), "permutations") == codes  # the ones range only has to include p


@pytest.mark.parametrize("p, ones", [(2, (1, 1)), (3, (1, 2)), (3, (2, 4)), (4, (1, 1))])
def test_permutations_plus_ones_is_the_union(p, ones):
    codes = pt.pattern_codes(p, ones, "permutations+ones")
    perms = set(pt.pattern_codes(p, family="permutations"))
    brute = [c for c in range(1, (1 << p * p) - 1) if c in perms or ones[0] <= pt.ones_of(c) <= ones[1]]
    assert codes == brute  # in increasing code order, each once
    assert len(codes) == len(perms) + pt.pattern_count(p, ones) - (math.factorial(p) if ones[0] <= p <= ones[1] else 0)


def test_diagonal_and_description():
    assert pt.pattern_to_code(pt.diagonal(2)) == 0b1001
    assert pt.pattern_to_code(pt.diagonal(3)) == 0b100010001
    assert pt.describe(9, 2) == "#.|.#"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pt.pattern_codes(1), "from 2 to 5"),
        (lambda: pt.pattern_codes(6), "from 2 to 5"),
        (lambda: pt.pattern_codes(2.0), "integer"),
        (lambda: pt.pattern_codes(2, (3, 2)), "empty"),
        (lambda: pt.pattern_codes(2, (0, 2)), "outside 1-3"),
        (lambda: pt.pattern_codes(3, (1, 9)), "outside 1-8"),
        (lambda: pt.pattern_codes(3, (1, 2), "permutations"), "computes 3 positions per patch, outside"),
        (lambda: pt.pattern_codes(3, None, "rows"), "unknown pattern family 'rows'"),
        (lambda: pt.code_to_pattern(15, 2), "not a pattern"),
        (lambda: pt.code_to_pattern(0, 2), "not a pattern"),
        (lambda: pt.pattern_to_code(torch.ones(2, 2, dtype=torch.bool)), "all-true"),
        (lambda: pt.pattern_to_code(torch.ones(2, 3, dtype=torch.bool)), "square"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(CrossneuronError, match=message):
        call()
