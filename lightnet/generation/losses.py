"""DDPM training objective: ε-prediction MSE, plus the variational bound for learned sigma (Improved DDPM / DiT).

With ``out_channels = 2 × in_channels`` the model's second half ``v ∈ [−1, 1]`` (unbounded output, used as is)
interpolates the reverse-process log-variance between the posterior variance β̃_t and β_t:

    log σ²_θ = ((v + 1) / 2) · log β_t + (1 − (v + 1) / 2) · log β̃_t

and is trained by the variational bound term ``L_vb`` (KL between the true posterior q(x_{t−1} | x_t, x_0) and
p_θ(x_{t−1} | x_t), in bits per dimension; at t = 0 the discretised Gaussian decoder NLL), with the mean's
gradient stopped so that ``L_vb`` trains only the variance (Nichol & Dhariwal 2021, §3.1; DiT's ``loss = mse + vb``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["DiffusionLoss", "discretized_gaussian_log_likelihood", "normal_kl"]


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-likelihood (nats) of data ``x ∈ [−1, 1]`` quantised to 256 levels under N(means, e^{2·log_scales})."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class DiffusionLoss:
    """Noise, noisy inputs and loss of one DDPM training step, driven by a diffusers ``DDPMScheduler``'s betas.

    Args:
        scheduler: a diffusers scheduler with ``betas``/``alphas_cumprod`` (``DDPMScheduler``).
        learn_sigma: add ``L_vb`` for the variance half of the model output.
    """

    def __init__(self, scheduler, learn_sigma: bool = False) -> None:
        self.scheduler = scheduler
        self.learn_sigma = learn_sigma
        betas = scheduler.betas.double()
        ac = scheduler.alphas_cumprod.double()
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        self.num_timesteps = len(betas)
        self._tables = {
            "sqrt_recip_ac": torch.sqrt(1.0 / ac),
            "sqrt_recipm1_ac": torch.sqrt(1.0 / ac - 1.0),
            "post_coef1": betas * torch.sqrt(ac_prev) / (1.0 - ac),
            "post_coef2": (1.0 - ac_prev) * torch.sqrt(1.0 - betas) / (1.0 - ac),
            # log of the posterior variance, with the t = 0 entry (0) replaced by the t = 1 one
            "post_logvar": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "log_betas": torch.log(betas),
        }

    def _at(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        table = self._tables[name].to(t.device)
        return table[t].float().reshape(-1, *([1] * (ndim - 1)))

    def sample_timesteps(self, batch: int, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``t ~ U{0, …, T−1}``: ``[B]`` long."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)

    def vb_terms(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``L_vb`` per sample in bits/dim: ``[B]`` (KL for t > 0, decoder NLL for t = 0)."""
        nd = x0.dim()
        min_log, max_log = self._at("post_logvar", t, nd), self._at("log_betas", t, nd)
        frac = (v + 1.0) / 2.0
        model_logvar = frac * max_log + (1.0 - frac) * min_log
        pred_x0 = self._at("sqrt_recip_ac", t, nd) * x_t - self._at("sqrt_recipm1_ac", t, nd) * eps
        c1, c2 = self._at("post_coef1", t, nd), self._at("post_coef2", t, nd)
        model_mean = c1 * pred_x0 + c2 * x_t
        true_mean = c1 * x0 + c2 * x_t
        dims = list(range(1, nd))
        kl = normal_kl(true_mean, min_log, model_mean, model_logvar).mean(dims) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar).mean(dims) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def __call__(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor,
                 t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a model output ``[B, C or 2C, H, W]`` for targets ``x0``/``noise`` ``[B, C, H, W]`` at steps ``t``.

        Returns ``(scalar loss, {"mse": …, "vb": …})``.
        """
        C = x0.shape[1]
        out = model_output.float()
        if out.shape[1] not in (C, 2 * C):
            raise ValueError(f"model output has {out.shape[1]} channels; expected {C} or {2 * C} (learned sigma)")
        if self.learn_sigma and out.shape[1] != 2 * C:
            raise ValueError(f"learn_sigma needs out_channels = 2 x {C}, the model outputs {out.shape[1]}")
        eps = out[:, :C]
        mse = F.mse_loss(eps, noise.float())
        metrics = {"mse": float(mse.detach())}
        if not self.learn_sigma:
            return mse, metrics
        vb = self.vb_terms(x0.float(), x_t.float(), t, eps.detach(), out[:, C:]).mean()
        metrics["vb"] = float(vb.detach())
        return mse + vb, metrics
