"""Keyed, batch-invariant noise for :class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`.

Default noise comes from a ``torch.Generator`` through diffusers' ``randn_tensor``
(DDPM-exact); keyed noise is :func:`sdekit.kernels.normal` with key
``(seed, sample_index, stream)``, stream 0 for the initial latents and
``1 + j`` for entry ``j`` of ``timesteps`` (Salmon et al. 2011, Philox4x32-10;
see :mod:`sdekit.noise`).
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..kernels import normal
from ..noise import noise_kind


class KeyedNoise:
    """``set_noise_seed``, ``initial_noise`` and the per-call noise source of ``step``."""

    init_noise_sigma: float
    _noise_key: tuple | None = None

    def set_noise_seed(self, seed: int | None, sample_index: torch.Tensor | None = None):
        """Draw every following step's noise keyed by ``(seed, sample_index, entry)``, batch-invariant.

        Lets pipelines (which pass only ``generator`` to ``step``) use keyed noise:
        sample ``b``'s noise depends on ``(seed, sample_index[b])`` and the entry
        of ``timesteps`` only, not on the batch it is drawn in; the pipeline's
        ``generator`` then draws only its initial latents (see :meth:`initial_noise`).
        ``seed=None`` restores generator noise.  Survives ``set_timesteps``.

        Args:
            seed: Philox key, an integer in ``[0, 2⁶⁴)``, or ``None``.
            sample_index: int64 ``(B,)`` global sample indices (default ``arange(B)``).
        Raises:
            ValueError: on a bad ``seed``.
        """
        if seed is None:
            self._noise_key = None
            return
        self._noise_key = (_check_seed(seed), sample_index)

    def initial_noise(self, shape, *, seed: int, sample_index: torch.Tensor | None = None, device=None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Keyed initial latents ``init_noise_sigma · z``, ``z`` from :func:`sdekit.kernels.normal` (stream 0).

        Pass as a pipeline's ``latents=`` for batch-invariant runs with :meth:`set_noise_seed`.

        Args:
            shape: ``(B, *D)``.  seed, sample_index: as :meth:`set_noise_seed`.
        Returns:
            ``(B, *D)`` tensor of ``dtype`` on ``device`` (``sample_index``'s device by default, else CPU).
        Raises:
            ValueError / TypeError: on a bad ``seed``, or a ``sample_index`` that is not an integer ``(B,)`` tensor.
        """
        shape = tuple(int(v) for v in shape)
        if device is None and sample_index is not None:
            device = sample_index.device
        idx = _index(sample_index, shape[0], device)
        return normal(_check_seed(seed), idx, 0, shape[1:], dtype=dtype) * self.init_noise_sigma

    def _noise(self, sample, generator, seed, sample_index, stream: int):
        if seed is None and self._noise_key is not None:  # set_noise_seed: keyed, whatever generator a pipeline passes
            seed, sample_index = self._noise_key[0], (sample_index if sample_index is not None
                                                      else self._noise_key[1])
        elif noise_kind(seed, sample_index, generator, what="the step noise") == "generator":
            return lambda: randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        seed, idx = _check_seed(seed), _index(sample_index, sample.shape[0], sample.device)
        return lambda: normal(seed, idx, stream, sample.shape[1:], dtype=sample.dtype)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return seed


def _index(sample_index, batch: int, device) -> torch.Tensor:
    """``sample_index`` on ``device`` (``arange(batch)`` when ``None``), checked to be an integer ``(batch,)`` tensor."""
    if sample_index is None:
        return torch.arange(batch, device=device)
    if not isinstance(sample_index, torch.Tensor) or sample_index.dtype.is_floating_point \
            or sample_index.dtype == torch.bool:
        raise TypeError(f"sample_index must be an integer torch.Tensor, got {sample_index!r}")
    if tuple(sample_index.shape) != (batch,):
        raise ValueError(f"sample_index must have shape ({batch},) (one global index per sample), "
                         f"got {tuple(sample_index.shape)}")
    return sample_index.to(device=device, dtype=torch.int64)
