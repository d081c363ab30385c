"""Use a diffusers network (UNet, DiT…) as an sdekit score model.

    import sdekit
    from sdekit.integrations.diffusers_model import score_from_diffusers

    sde = sdekit.DiscreteVPSDE(pipe.scheduler.alphas_cumprod)
    score = score_from_diffusers(pipe.unet, sde, prediction_type=pipe.scheduler.config.prediction_type)
    x = sdekit.sample(score, sde, (B, 4, 64, 64), method="dpmpp_2m", steps=25,
                      model_kwargs={"encoder_hidden_states": text_embeddings}).x

The time mapping is the one :class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`
uses: training timestep ``k`` of an ``N``-step chain sits at SDE time
``t_k = (k + 1) T/N`` of :class:`~sdekit.DiscreteVPSDE`, so the network is
called at the (fractional) timestep ``k = t N/T − 1``.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_positive_int
from ..score_models import score_from_epsilon, score_from_v, score_from_x0
from ..sdes.discrete_vp import DiscreteVPSDE

ADAPTERS = {"epsilon": score_from_epsilon, "v_prediction": score_from_v, "sample": score_from_x0}
__all__ = ["DiffusersNetwork", "score_from_diffusers"]


class DiffusersNetwork:
    """``net(x, k, **model_kwargs)`` → the output tensor of a diffusers model called as ``model(x, k, …)``.

    Unwraps diffusers' output objects (``.sample``) and tuples (first entry);
    with ``learned_variance`` keeps the first ``C = x.shape[1]`` channels of a
    ``2C``-channel output (mean and variance halves, Nichol & Dhariwal 2021).
    """

    def __init__(self, model, learned_variance: bool = False):
        self.model = model
        self.learned_variance = learned_variance

    def __call__(self, x: torch.Tensor, k: torch.Tensor, **model_kwargs) -> torch.Tensor:
        out = self.model(x, k, **model_kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if self.learned_variance:
            if out.shape[1] != 2 * x.shape[1]:
                raise ValueError(f"learned_variance=True needs the model to return 2 × {x.shape[1]} channels, "
                                 f"got output shape {tuple(out.shape)}")
            out = out[:, : x.shape[1]]
        return out


def score_from_diffusers(model, sde: DiscreteVPSDE, prediction_type: str = "epsilon", num_train_timesteps: int = 1000,
                         *, learned_variance: bool = False):
    """Wrap a diffusers denoising network as an sdekit score model ``score(x, t, **model_kwargs)``.

    The network is called as ``model(x, k, **model_kwargs)`` (``UNet2DModel``,
    ``UNet2DConditionModel``, ``Transformer2DModel``…), its ``.sample`` taken,
    and turned into ``∇ₓ log p_t(x)`` by the adapter of its parameterisation.
    Conditioning goes through ``model_kwargs`` (e.g. ``encoder_hidden_states``
    ``(B, L, D)``, ``class_labels`` ``(B,)``, SDXL's ``added_cond_kwargs`` dict),
    per sample, so :func:`sdekit.sample` keeps it row-aligned with the batch.

    Args:
        model: the diffusers network (any callable with that signature and output).
        sde: the :class:`~sdekit.DiscreteVPSDE` of the network's training
            schedule, e.g. ``DiscreteVPSDE(scheduler.alphas_cumprod)``.
        prediction_type: ``"epsilon"`` (ε), ``"v_prediction"`` (v = m ε − σ x₀,
            Salimans & Ho 2022) or ``"sample"`` (x₀) — the scheduler config's name.
        num_train_timesteps: ``N`` of the training chain (must equal ``sde``'s).
        learned_variance: the network returns ``2C`` channels (mean and learned
            variance, e.g. DiT or DeepFloyd IF); only the first ``C`` are used.
    Returns:
        a score model: ``x`` ``(B, *D)``, ``t`` ``(B,)`` SDE time in ``(0, T]``
        → ``(B, *D)``.  The network sees ``x`` unchanged (VP inputs need no
        scaling) and the float32 timestep ``k = t N/T − 1`` ``(B,)`` on ``x``'s
        device (fractional between training timesteps; ``t = T/N``, sdekit's
        ``sampling_eps``, is timestep 0).
    Raises:
        TypeError: if ``sde`` is not a :class:`~sdekit.DiscreteVPSDE` or ``model`` is not callable.
        ValueError: on an unknown ``prediction_type``, or ``num_train_timesteps``
            different from ``sde.num_timesteps``; (on call) if the network's output
            has the wrong shape.

    Source: Ho et al. 2020 (ε-parameterisation), Salimans & Ho 2022 (v),
    Tweedie's formula for x₀ (see :mod:`sdekit.score_models`); the time map is
    :class:`~sdekit.DiscreteVPSDE`'s ``t_k = (k + 1) T/N``.
    """
    if not callable(model):
        raise TypeError(f"model must be a callable diffusers network, got {type(model).__name__}")
    if not isinstance(sde, DiscreteVPSDE):
        raise TypeError(f"sde must be the sdekit.DiscreteVPSDE of the model's training schedule "
                        f"(DiscreteVPSDE(scheduler.alphas_cumprod)), got {type(sde).__name__}")
    check_choice("prediction_type", prediction_type, tuple(ADAPTERS))
    N = check_positive_int("num_train_timesteps", num_train_timesteps)
    if N != sde.num_timesteps:
        raise ValueError(f"num_train_timesteps={N} differs from the sde's {sde.num_timesteps} timesteps "
                         f"(len(alphas_cumprod)); pass the scheduler's num_train_timesteps")

    def time_input(t: torch.Tensor) -> torch.Tensor:
        return sde.time_to_timestep(t.to(torch.float64)).to(torch.float32)

    return ADAPTERS[prediction_type](DiffusersNetwork(model, learned_variance), sde, time_input)
