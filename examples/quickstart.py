"""Quick start: a glocal estimate of the global hypergradient of a small model, against the exact one."""

import torch
from glocal import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
from glocal import forward_trajectory, glocal_estimate, reverse_hypergradient
from glocal.data import load_dataset
from glocal.models import build_model

d = load_dataset("digits", dtype=torch.float64, n_train=300, label_noise=0.3)  # bundled, no download
model = build_model({"kind": "logreg"}, d.in_shape, d.n_classes).double()
hyper = HyperSpace([HyperBlock("example_weight", d.n_train, init=0.5)])        # one weight per example
dyn = TrainingDynamics(model, OptimizerConfig("sgd", lr=0.5), hyper)
theta, phi = dyn.init_state(seed=0), hyper.init_phi(torch.float64)
full = Batch(d.x_train, d.y_train, torch.arange(d.n_train))
val = dyn.loss_fn(d.x_val, d.y_val)                                             # the meta objective

window = forward_trajectory(dyn.step, val, theta, phi, [full] * 30)    # h_{0->t} for t = 1..30
est = glocal_estimate(window.h, estimator="horizon", steps_ahead=270)  # predict h_{0->300}
exact = reverse_hypergradient(dyn.step, val, theta, phi, [full] * 300).h
rel = lambda h: float((h - exact).norm() / exact.norm())
print(f"local {rel(window.local):.3f}  glocal {rel(est.value):.3f}  fallback={est.fallback}")
