"""glocal: exact and glocal (Koopman/DMD) hypergradients for gradient-based hyperparameter tuning.

Reference implementation of Hataya & Kawahara, "Glocal Hypergradient Estimation with
Koopman Operator" (arXiv 2402.02741).
"""

__version__ = "0.1.0"

from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics  # noqa: E402
from glocal.hypergrad import (  # noqa: E402
    ForwardTrajectory,
    ReverseResult,
    finite_difference_hypergradient,
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
)
from glocal.koopman import DMDFit, GlocalEstimate, glocal_estimate, hankel_dmd  # noqa: E402

__all__ = [
    "__version__",
    "Batch",
    "HyperBlock",
    "HyperSpace",
    "OptimizerConfig",
    "TrainingDynamics",
    "ForwardTrajectory",
    "ReverseResult",
    "forward_trajectory",
    "reverse_hypergradient",
    "reverse_window_hypergradients",
    "finite_difference_hypergradient",
    "DMDFit",
    "GlocalEstimate",
    "glocal_estimate",
    "hankel_dmd",
]
