"""Implicit, IMEX and DAE cases shared by tests/test_implicit.py and tests/test_assembled.py:
small models, the solve settings and their autograd references (tests/reference_implicit.py)."""
from __future__ import annotations

import numpy as np
import torch

import pnode
from reference_implicit import ark_solve, theta_solve

DT = torch.float64
T_OUT = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=DT)
STEP = 0.05
STEPS = np.linspace(0.0, 0.4, 9)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(DT)

    def forward(self, t, y):
        return self.net(y) * (1 + 0.3 * torch.sin(t)) - y


class Stiff(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([5.0, 40.0], dtype=DT))

    def forward(self, t, y):
        return -self.k * y + 0.1 * torch.cos(t)


def setup_models():
    torch.manual_seed(0)
    f, g = Mlp(), Stiff()
    y0 = torch.randn(3, 2, dtype=DT, requires_grad=True)
    return f, g, y0


def loss_of(out):
    return (out ** 2).sum() + out[2].sum()


CASES = {  # name -> (odeint keywords, reference)
    "beuler": (dict(method="beuler"), lambda f, g, y0: theta_solve(f, y0, STEPS, T_OUT.numpy(), 1.0, False)),
    "cn": (dict(method="cn"), lambda f, g, y0: theta_solve(f, y0, STEPS, T_OUT.numpy(), 0.5, True)),
    "theta0.7": (dict(method="theta", options={"ts_theta_theta": 0.7}),
                 lambda f, g, y0: theta_solve(f, y0, STEPS, T_OUT.numpy(), 0.7, False)),
    "arkimex-l2": (dict(method="arkimex"), lambda f, g, y0: ark_solve(f, None, y0, STEPS, T_OUT.numpy(), "l2")),
    "arkimex-2e": (dict(method="arkimex", options={"ts_arkimex_type": "2e"}),
                   lambda f, g, y0: ark_solve(f, None, y0, STEPS, T_OUT.numpy(), "2e")),
    "imex-l2": (dict(method="arkimex", implicit="g"),
                lambda f, g, y0: ark_solve(g, f, y0, STEPS, T_OUT.numpy(), "l2")),
    "imex-ars122": (dict(method="arkimex", implicit="g", options={"ts_arkimex_type": "ars122"}),
                    lambda f, g, y0: ark_solve(g, f, y0, STEPS, T_OUT.numpy(), "ars122")),
}


def run_case(kw, f, g, y0, **extra):
    kw = dict(kw, **extra)
    if kw.get("implicit") == "g":
        kw["implicit"] = g
    return pnode.odeint_adjoint(f, y0, T_OUT, step_size=STEP, **kw)


def check_against_reference(case: str, **extra) -> None:
    """Solution and gradients of CASES[case] equal autograd through the reference scheme."""
    kw, reference = CASES[case]
    f, g, y0 = setup_models()
    params = [y0, *f.parameters()] + (list(g.parameters()) if "implicit" in kw else [])
    out = run_case(kw, f, g, y0, **extra)
    grads = torch.autograd.grad(loss_of(out), params)
    ref = reference(f, g, y0)
    ref_grads = torch.autograd.grad(loss_of(ref), params)
    assert (out - ref).abs().max() < 1e-10
    for a, b in zip(grads, ref_grads):
        assert float((a - b).norm() / b.norm()) < 1e-8


def rober(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2])


class Dae(torch.nn.Module):
    """y1' = -k y1 + y2,  0 = a y1^2 - y2 (index 1)."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(2.0, dtype=DT))
        self.a = torch.nn.Parameter(torch.tensor(0.5, dtype=DT))

    def forward(self, t, y):
        return torch.stack([-self.k * y[0] + y[1], self.a * y[0] ** 2 - y[1]])


MASS = torch.tensor([1.0, 0.0], dtype=DT)
