"""Command line: ``python -m sdekit.jobs sample|loglik OUT_DIR [options]``, also under ``torchrun``.

Example (2 processes on one machine, gloo on the CPU)::

    torchrun --standalone --nproc-per-node 2 -m sdekit.jobs sample out/ \\
        --model sdekit.testing.job_models:mixture_score --shape 2 \\
        --num-samples 1000 --shard-size 100 --seed 0 --method ode

Run the same command again to resume; the summary is printed by rank 0 as JSON.

Per-sample conditioning by sample index (:mod:`sdekit.jobs.conditioning`),
e.g. class labels ``i mod 10`` for a class-conditional model::

    python -m sdekit.jobs sample out/ --model my_pkg.models:unet --shape 3,32,32 \
        --num-samples 50000 --shard-size 1000 --seed 0 \
        --cond sdekit.jobs.conditioning:class_labels --cond-kwargs '{"num_classes": 10}'

``--model-kwargs`` are the arguments of the model *factory*; the model's
per-sample keyword arguments come from ``--cond`` / ``--cond-kwargs``.

The model's weights are fingerprinted (sha256 of the state dict of the
``nn.Module`` it is or wraps) so that a retrained checkpoint behind the same
factory is refused in an old directory; ``--model-version TEXT`` names them
instead (:mod:`sdekit.jobs.fingerprint`).
"""

from __future__ import annotations

import argparse
import json
import sys

from .defaults import LIKELIHOOD, SAMPLE
from .likelihood_job import run_likelihood_job
from .sample_job import run_sample_job


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from None


def _shape(text: str):
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated integers, got {text!r}") from None


def _common(p: argparse.ArgumentParser, defaults: dict) -> None:
    p.add_argument("out_dir", help="output directory (created; reused to resume)")
    p.add_argument("--model", required=True, help="score-model factory, 'package.module:function'")
    p.add_argument("--model-kwargs", type=_json, default={}, help="JSON object of factory arguments")
    p.add_argument("--model-version", default=None,
                   help="identifies the model's weights in the configuration instead of the sha256 of its "
                        "state dict (default: that sha256; 'unfingerprinted' for a model with no nn.Module)")
    p.add_argument("--cond", default=None,
                   help="conditioning factory 'package.module:function': its result maps the global sample "
                        "indices of a batch to the model's keyword arguments (default: unconditional)")
    p.add_argument("--cond-kwargs", type=_json, default=None, help="JSON object of conditioning factory arguments")
    p.add_argument("--sde", default="VPSDE", help="SDE class of sdekit.sdes (default VPSDE)")
    p.add_argument("--sde-kwargs", type=_json, default={}, help="JSON object of SDE arguments")
    p.add_argument("--shard-size", type=int, required=True, help="samples per shard")
    p.add_argument("--batch-size", type=int, default=64, help="samples per call (does not change results)")
    p.add_argument("--seed", type=int, required=True, help="noise key")
    p.add_argument("--rtol", type=float, default=defaults["rtol"])
    p.add_argument("--atol", type=float, default=defaults["atol"])
    p.add_argument("--max-steps", type=int, default=defaults["max_steps"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--on-nonfinite", default="raise", choices=["raise", "mark"])


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m sdekit.jobs``."""
    top = argparse.ArgumentParser(prog="python -m sdekit.jobs", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="job", required=True)
    s = sub.add_parser("sample", help="draw samples (sdekit.sample)")
    _common(s, SAMPLE)
    s.add_argument("--shape", type=_shape, required=True, help="per-sample shape, e.g. 3,32,32")
    s.add_argument("--num-samples", type=int, required=True)
    s.add_argument("--method", default=SAMPLE["method"])
    s.add_argument("--steps", type=int, default=SAMPLE["steps"])
    s.add_argument("--corrector", default=SAMPLE["corrector"])
    s.add_argument("--snr", type=float, default=SAMPLE["snr"])
    s.add_argument("--corrector-steps", type=int, default=SAMPLE["corrector_steps"])
    s.add_argument("--eps", type=float, default=SAMPLE["eps"])
    s.add_argument("--no-denoise", dest="denoise", action="store_false")
    ll = sub.add_parser("loglik", help="log-likelihood and bits/dim of a data set (sdekit.log_likelihood)")
    _common(ll, LIKELIHOOD)
    ll.add_argument("--data", required=True, help="data factory 'package.module:function' -> tensor (N, *D)")
    ll.add_argument("--data-kwargs", type=_json, default={})
    ll.add_argument("--num-samples", type=int, default=None, help="score rows [0, n) (default: all)")
    ll.add_argument("--trace", default=LIKELIHOOD["trace"], choices=["hutchinson", "exact"])
    ll.add_argument("--probes", type=int, default=LIKELIHOOD["probes"])
    ll.add_argument("--noise", default=LIKELIHOOD["noise"], choices=["rademacher", "gaussian"])
    ll.add_argument("--eps", type=float, default=LIKELIHOOD["eps"])
    ll.add_argument("--levels", type=int, default=None, help="discrete levels per dimension (bits/dim)")
    ll.add_argument("--data-range", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    return top


def main(argv=None) -> int:
    """Run the job named on the command line; rank 0 prints the summary as JSON."""
    args = vars(parser().parse_args(argv))
    job, out_dir = args.pop("job"), args.pop("out_dir")
    run = run_sample_job if job == "sample" else run_likelihood_job
    result = run(out_dir, **args)
    if result.summary is not None:
        print(json.dumps(result.summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
