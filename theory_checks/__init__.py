"""Theory checks for glocal: exact quadratic bilevel problems, error bounds and complexity formulas."""

from theory_checks.bounds import (
    cost_global_forward,
    cost_global_reverse,
    cost_glocal,
    cost_local,
    error_bound,
    expected_slope,
    geometric_bound,
)
from theory_checks.quadratic import KINDS, Mode, QuadraticProblem, make_problem, simulate

__all__ = [
    "KINDS",
    "Mode",
    "QuadraticProblem",
    "cost_glocal",
    "cost_global_forward",
    "cost_global_reverse",
    "cost_local",
    "error_bound",
    "expected_slope",
    "geometric_bound",
    "make_problem",
    "simulate",
]
