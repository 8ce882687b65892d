"""Averaging and interpolation of models, and Git Re-Basin weight matching to align them first.

BatchNorm running statistics of an average are not those of the averaged function: call
recondition_batchnorm(model, batches) on the result (the same helper the curve metrics use).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from zoo.architectures.permutations import PermutationGroup, module_groups, permute
from zoo.metrics.connectivity import recondition_batchnorm

__all__ = ["align", "average", "interpolate", "recondition_batchnorm"]


def _with_state(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(template)
    model.load_state_dict(state, strict=True)
    return model.eval()


def interpolate(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """A copy of `a` holding (1 − alpha)·a + alpha·b (exactly a at 0 and b at 1), eval mode.

    Integer buffers (num_batches_tracked) come from the nearer end.
    """
    sa, sb = a.state_dict(), b.state_dict()
    if alpha in (0, 1):
        return _with_state(a, sb if alpha == 1 else sa)
    state = {n: torch.lerp(v, sb[n], alpha) if v.is_floating_point()
             else (sa[n] if alpha < 0.5 else sb[n]) for n, v in sa.items()}
    return _with_state(a, state)


def average(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of models[0] holding the uniform average of all models' float tensors, eval mode.

    Integer buffers come from models[0]; re-estimate BatchNorm statistics afterwards.
    """
    if not models:
        raise ValueError("average: models is empty; expected at least one model")
    states = [m.state_dict() for m in models]
    state = {n: torch.stack([s[n] for s in states]).mean(0) if v.is_floating_point() else v
             for n, v in states[0].items()}
    return _with_state(models[0], state)


def align(a: nn.Module, b: nn.Module, *, max_iter: int = 100,
          generator: torch.Generator | None = None) -> nn.Module:
    """A copy of `b` whose hidden units are permuted to match `a`; its function is unchanged.

    Weight matching (Ainsworth et al., Git Re-Basin): coordinate descent over the permutation
    groups in random order, each solved by the Hungarian algorithm on sum_members W_a W_bᵀ
    (float64, parameters only), until no group improves. MLPs, CNNs (nn.Sequential) and
    ResNets; BatchNorm parameters and running statistics move with their conv.
    """
    from scipy.optimize import linear_sum_assignment

    groups = module_groups(a)
    if [(g.name, g.size) for g in groups] != [(g.name, g.size) for g in module_groups(b)]:
        raise ValueError("align: a and b have different architectures or widths")
    pa = {n: p.detach().to(torch.float64) for n, p in a.named_parameters()}
    pb = {n: p.detach().to(torch.float64) for n, p in b.named_parameters()}
    perms = {g.name: torch.arange(g.size) for g in groups}
    for _ in range(max_iter):
        improved = False
        for number in torch.randperm(len(groups), generator=generator).tolist():
            group = groups[number]
            cost = _matching_cost(group, groups, pa, pb, perms)
            _, columns = linear_sum_assignment(cost.numpy(), maximize=True)
            new = torch.as_tensor(columns)
            rows = torch.arange(group.size)
            gain = cost[rows, new].sum() - cost[rows, perms[group.name]].sum()
            improved |= bool(gain > 1e-12)
            perms[group.name] = new
        if not improved:
            break
    return _with_state(b, permute(b.state_dict(), groups, perms))


def _matching_cost(group: PermutationGroup, groups: Sequence[PermutationGroup],
                   pa: dict[str, torch.Tensor], pb: dict[str, torch.Tensor],
                   perms: dict[str, torch.Tensor]) -> torch.Tensor:
    """(size, size) similarity of a's unit i and b's unit j over the group's parameters, with
    b's other axes already permuted by the other groups' current permutations."""
    cost = torch.zeros(group.size, group.size, dtype=torch.float64)
    for name, axis in group.members:
        if name not in pa:  # running statistics are buffers: they move but do not vote
            continue
        wb = pb[name]
        for other in groups:
            if other is not group:
                for member, other_axis in other.members:
                    if member == name:
                        wb = wb.index_select(other_axis, perms[other.name])
        wa = pa[name].movedim(axis, 0).reshape(group.size, -1)
        cost += wa @ wb.movedim(axis, 0).reshape(group.size, -1).T
    return cost
