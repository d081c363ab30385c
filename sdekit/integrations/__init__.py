"""Plug sdekit's samplers into other libraries' models.

* :mod:`sdekit.integrations.diffusers_scheduler` — :class:`SDEScheduler`, a
  diffusers scheduler (needs ``pip install sdekit[diffusers]``).
* :mod:`sdekit.integrations.diffusers_model` — :func:`score_from_diffusers`, a
  diffusers UNet (ε, v or x₀ prediction, any conditioning as ``model_kwargs``)
  as an sdekit score model on :class:`~sdekit.DiscreteVPSDE` time.
* :mod:`sdekit.integrations.k_diffusion` — samplers with k-diffusion's
  ``sample_<name>(model, x, sigmas, …)`` signature for k-diffusion denoisers
  (no extra dependency).

Nothing here is imported by ``import sdekit``: each module imports its
library only when you import the module.
"""
