"""Losses over embeddings. They take embeddings (and a temperature), never raw inputs.

Under DDP, contrastive losses see every rank's batch through `gather_with_grad`, the one place
that talks to torch.distributed here.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank, keeping the gradient for the local slice."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def spread_shortfall(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance term: how far each unit's standard deviation over the batch (rows) falls
    below 1, averaged. It rules out the collapse of every row to one embedding."""
    return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def vicreg(
    za: torch.Tensor, zb: torch.Tensor, *, sim_weight: float = 25.0, var_weight: float = 25.0,
    cov_weight: float = 1.0, eps: float = 1e-4,
) -> dict[str, torch.Tensor]:
    """VICReg (Bardes et al., 2022) between matched rows of `za` and `zb`; returns the terms and 'loss'."""
    za, zb = gather_with_grad(za), gather_with_grad(zb)
    invariance = F.mse_loss(za, zb)
    variance = za.new_zeros(())
    covariance = za.new_zeros(())
    n, d = za.shape
    for z in (za, zb):
        z = z - z.mean(dim=0)
        variance = variance + spread_shortfall(z, eps) / 2
        cov = (z.T @ z) / max(n - 1, 1)
        off_diag = cov - torch.diag(torch.diag(cov))
        covariance = covariance + off_diag.pow(2).sum() / d / 2
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


def info_nce(za: torch.Tensor, zb: torch.Tensor, *, temperature: float | torch.Tensor = 0.07) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE (CLIP loss) between matched rows; embeddings are L2-normalised here."""
    za = F.normalize(gather_with_grad(za), dim=-1)
    zb = F.normalize(gather_with_grad(zb), dim=-1)
    logits = za @ zb.T / temperature
    target = torch.arange(za.shape[0], device=za.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return {"loss": loss}
