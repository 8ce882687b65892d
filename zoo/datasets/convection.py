"""Points for the 1-D convection PINN: u_t + beta u_x = 0 on x in [0, 2 pi), t in [0, 1].

u(x, 0) = sin x with periodic boundaries, so u(x, t) = sin(x - beta t). beta is a grid axis the
trainer reads from the spec, not a data argument: the points are the same for every beta.
"""

from __future__ import annotations

import math

import torch

from zoo.datasets.arguments import Param, integer, integer_pair
from zoo.datasets.base import DataBundle, DataInfo

INFO = DataInfo("pinn", (2,), 1)
X_MAX = 2.0 * math.pi  # the period; x = X_MAX is the right boundary, identified with x = 0
PARAMS = {
    "collocation": Param(1000, integer(1)),
    "initial": Param(256, integer(1)),
    "boundary": Param(100, integer(1)),
    "grid": Param((64, 32), integer_pair(2)),  # test grid (n_x, n_t)
    "seed": Param(0, integer(0)),
}


def exact_solution(points: torch.Tensor, beta: float) -> torch.Tensor:
    """u(x, t) = sin(x - beta t).

    Args:
        points: (N, 2) as (x, t).
        beta: convection speed.
    Returns:
        (N,) in the dtype and on the device of points; differentiable.
    """
    return torch.sin(points[:, 0] - beta * points[:, 1])


def grid_points(n_x: int, n_t: int) -> torch.Tensor:
    """The test grid: n_x x-values in [0, 2 pi) (endpoint left out: it repeats x = 0) times n_t
    t-values in [0, 1] (both ends in).

    Returns:
        (n_x * n_t, 2) float32 as (x, t); reshape to (n_x, n_t, 2) for a picture.
    """
    xs = torch.arange(n_x, dtype=torch.float64) * (X_MAX / n_x)
    ts = torch.linspace(0.0, 1.0, n_t, dtype=torch.float64)
    x_grid, t_grid = torch.meshgrid(xs, ts, indexing="ij")
    return torch.stack([x_grid.reshape(-1), t_grid.reshape(-1)], dim=1).to(torch.float32)


def load_convection(args: dict) -> DataBundle:
    """Seeded uniform collocation, initial and boundary points plus a fixed test grid.

    Returns:
        train = (collocation (collocation, 2),), test = (grid (n_x * n_t, 2),); extras
        "initial" (initial, 2) at t = 0, "boundary_left" (boundary, 2) at x = 0 and
        "boundary_right" at x = 2 pi with the same t values. All float32 as (x, t).
    """
    generator = torch.Generator().manual_seed(args["seed"])
    two_pi = torch.tensor(X_MAX, dtype=torch.float32)

    # Drawn in float32 so that x * 2 pi stays strictly below float32(2 pi).
    collocation = torch.rand(args["collocation"], 2, generator=generator)
    collocation[:, 0] *= two_pi
    initial_x = torch.rand(args["initial"], generator=generator) * two_pi
    initial = torch.stack([initial_x, torch.zeros_like(initial_x)], dim=1)
    boundary_t = torch.rand(args["boundary"], generator=generator)
    left = torch.stack([torch.zeros_like(boundary_t), boundary_t], dim=1)
    right = torch.stack([torch.full_like(boundary_t, X_MAX), boundary_t], dim=1)

    extras = {"initial": initial, "boundary_left": left, "boundary_right": right}
    test = (grid_points(*args["grid"]),)
    return DataBundle("convection", INFO, (collocation,), test, extras)
