"""Agreement of sdekit's plug-ins with the libraries they replace (the figures in the README).

    python benchmarks/plugin_agreement.py

1. diffusers: ``SDEScheduler(method="ancestral")`` against ``DDPMScheduler`` in the same
   ``DDPMPipeline`` loop (tiny random ``UNet2DModel``, 2 images 3×8×8, the same generator):
   max |difference| of the raw final samples (before the pipeline's clamp to [0, 1]).
2. k-diffusion: ``sdekit.integrations.k_diffusion.sample_euler`` / ``sample_heun`` against
   k-diffusion's own (its sampling module loaded as in tests/) on the same denoiser and
   30-step Karras σ schedule: the exact denoiser of a 2-D Gaussian mixture and a small random
   network, float64 and float32.  Prints markdown tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from k_diffusion_reference import load_sampling  # noqa: E402
from test_diffusers_scheduler import _raw_loop, _unet  # noqa: E402
from test_k_diffusion import _problem  # noqa: E402

from sdekit.integrations import k_diffusion as ours  # noqa: E402


def diffusers_rows():
    from diffusers import DDPMScheduler

    from sdekit.integrations.diffusers_scheduler import SDEScheduler

    unet = _unet()
    rows = []
    for steps in (20, 50, 1000):
        for config in ({}, {"prediction_type": "v_prediction"}):
            ddpm = DDPMScheduler(**config)
            ref, got = _raw_loop(unet, ddpm, steps), _raw_loop(unet, SDEScheduler.from_config(ddpm.config), steps)
            name = config.get("prediction_type", "epsilon")
            rows.append(f"| {steps} | {name} | {float((got - ref).abs().max()):.1e} | {float(ref.abs().max()):.2f} |")
    head = ["| steps | prediction | max abs diff vs DDPMScheduler | max abs sample |", "| ---: | --- | ---: | ---: |"]
    return head + rows


def k_diffusion_rows(kd):
    rows = []
    for name in ("euler", "heun"):
        for kind in ("mixture", "network"):
            cells = []
            for dtype in (torch.float64, torch.float32):
                model, x, sigmas = _problem(kind, dtype)
                ref = getattr(kd, f"sample_{name}")(model, x, sigmas, disable=True)
                got = getattr(ours, f"sample_{name}")(model, x, sigmas, disable=True)
                cells.append(f"{float((got - ref).abs().max()):.1e}")
            rows.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    head = ["| sampler | denoiser | max abs diff, float64 | max abs diff, float32 |", "| --- | --- | ---: | ---: |"]
    return head + rows


def main():
    torch.set_num_threads(1)
    print("\n".join(diffusers_rows()))
    kd = load_sampling()
    print()
    print(kd if isinstance(kd, str) else "\n".join(k_diffusion_rows(kd)))


if __name__ == "__main__":
    main()
