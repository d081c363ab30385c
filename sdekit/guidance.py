"""Guidance: score-model combinators that steer sampling towards a label.

Both follow the seed notes (000, "Guidance scale" and "Classifier-free-corrected
noise prediction"; 001, "Conditioning v1/v2"; 003, "Classifier guidance"):
the guided score at scale γ is

    ∇ₓ log p_t^γ(x | y) = ∇ₓ log p_t(x) + γ ∇ₓ log p_t(y | x)
                        = (1 − γ) ∇ₓ log p_t(x) + γ ∇ₓ log p_t(x | y),

the score of ``p_t(x) p_t(y | x)^γ ∝ p_t(x)^{1−γ} p_t(x | y)^γ``.  γ = 1 is the
exact class-conditional score; γ > 1 sharpens it.

* :func:`classifier_guidance` uses the first form with a noisy classifier
  ``log p_t(y | x)`` differentiated by autograd (Dhariwal & Nichol 2021, Alg. 1;
  Song et al. 2021, Appendix I, eq. 49).
* :func:`classifier_free_guidance` uses the second with one network trained with
  the label dropped to a null label ∅ (Ho & Salimans 2022, eq. 6):
  ``ε̂ = γ ε(x, y) + (1 − γ) ε(x, ∅)``.  Every usual parameterisation (ε,
  score, x̂₀, v, denoiser) is affine in ε with weights that do not depend on
  the label, so the same weighted sum is correct for any of them; wrap the
  result with :func:`sdekit.score_from_epsilon` (etc.) as for an unguided network.

Labels are an int (one label for the whole batch), a ``(B, …)`` tensor (one per
sample: class indices or embeddings), or ``None``: then each call reads them
from its keyword arguments, ``model_kwargs[label_key]`` (default ``"y"``, the
name guided-diffusion and DiT use), so they arrive as per-sample conditioning
(:mod:`sdekit.conditioning`).  A wrapper built with a per-sample label tensor
hands it to the samplers as bound conditioning, so every method — the
adaptive ODE and :func:`sdekit.log_likelihood`, which evaluate only their
still-active samples, included — gathers the labels with their rows.
Other keyword arguments (masks, embeddings) reach the model unchanged; in
classifier-free guidance their tensors are doubled with the batch.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ._checks import check_model_output, check_positive_int, check_real
from .conditioning import map_model_kwargs
from .score_models import checked_score


def _finite_scale(scale) -> float:
    return check_real("scale", scale)


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_class_indices(name: str, labels, num_classes: int | None, *, null_label=None, dim1: bool = False) -> None:
    """Construction-time checks of class-index labels (int or integer tensor).

    Integer dtype; ``dim1``: 0-D or 1-D; values ``>= 0``, ``< num_classes`` when
    given, and ``!= null_label`` when given.  The value checks of a tensor read
    it once (a host sync for a device tensor), here at construction only.
    """
    if isinstance(labels, torch.Tensor):
        if labels.dtype not in _INT_DTYPES:
            hint = " (embeddings need a tensor null_label)" if null_label is not None else ""
            raise TypeError(f"{name} must be class indices: an int or an integer tensor, got dtype {labels.dtype}{hint}")
        if dim1 and labels.dim() > 1:
            raise ValueError(f"{name} must be an int or a (B,) tensor of class indices, got shape {tuple(labels.shape)}")
        if labels.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(labels.shape)}")
        lo, hi = int(labels.min()), int(labels.max())
    else:
        lo = hi = int(labels)
    if lo < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {lo}")
    if num_classes is not None and hi >= num_classes:
        raise ValueError(f"{name} must be class indices in [0, num_classes) = [0, {num_classes}), got {hi}")
    if null_label is not None:
        same = bool((labels == null_label).any()) if isinstance(labels, torch.Tensor) else labels == null_label
        if same:
            raise ValueError(f"{name} must differ from null_label = {null_label} (the null label is the "
                             f"unconditional input), got a label equal to it")


def _check_num_classes(num_classes) -> int | None:
    return None if num_classes is None else check_positive_int("num_classes", num_classes)


class _OnDevice:
    """A label tensor, copied once to each device it is used on (no copy per call)."""

    def __init__(self, label: torch.Tensor):
        self.copies = {label.device: label}

    def on(self, device) -> torch.Tensor:
        if device not in self.copies:
            self.copies[device] = next(iter(self.copies.values())).to(device)
        return self.copies[device]


def _check_label(name: str, label):
    if isinstance(label, bool) or not isinstance(label, (int, torch.Tensor)):
        raise TypeError(f"{name} must be an int or a tensor, got {type(label).__name__}")
    return _OnDevice(label) if isinstance(label, torch.Tensor) else label


#: Keyword under which a wrapper's own per-sample labels travel as bound conditioning.
BOUND_LABELS = "_sdekit_guidance_labels"


def _check_label_key(label_key) -> str:
    if not isinstance(label_key, str) or not label_key:
        raise TypeError(f"label_key must be a non-empty string (a model keyword), got {label_key!r}")
    return label_key


def _batched(name: str, label, x: torch.Tensor, *, per_sample_ok: bool = True) -> torch.Tensor:
    """``label`` as a ``(B, …)`` tensor on ``x``'s device for a call with ``B = x.shape[0]``."""
    B = x.shape[0]
    if isinstance(label, int):
        return torch.full((B,), label, dtype=torch.int64, device=x.device)
    label = label.on(x.device) if isinstance(label, _OnDevice) else label.to(x.device)
    if label.dim() == 0:
        return label.expand(B)
    if not per_sample_ok:  # one label (e.g. a null embedding (E,)) shared by the batch
        return label.expand((B,) + tuple(label.shape))
    if label.shape[0] == B:
        return label
    raise ValueError(
        f"{name} has {label.shape[0]} entries but the model was called with a batch of {B}; "
        f"per-sample labels must have the batch as leading dimension. sdekit.sample and "
        f"sdekit.log_likelihood gather them with the samples they evaluate; other solvers that "
        f"evaluate part of the batch need the labels passed per call, as model_kwargs (labels=None)"
    )


def _call_labels(owner, name: str, model_kwargs: dict, x: torch.Tensor) -> torch.Tensor:
    """The labels of this call: the wrapper's own, or popped from ``model_kwargs[owner.label_key]``."""
    if owner.labels is not None:
        return _batched(name, owner.labels, x)
    if owner.label_key not in model_kwargs:
        raise ValueError(f"{name}=None: pass the labels per call as model_kwargs[{owner.label_key!r}] "
                         f"(a (B, ...) tensor or an int)")
    label = model_kwargs.pop(owner.label_key)
    if isinstance(label, bool) or not isinstance(label, (int, torch.Tensor)):
        raise TypeError(f"model_kwargs[{owner.label_key!r}] (the {name}) must be an int or a tensor, "
                        f"got {type(label).__name__}")
    return _batched(f"model_kwargs[{owner.label_key!r}]", label, x)


def _unbind_labels(owner):
    """``(copy reading the labels from model_kwargs, {key: labels})`` for per-sample tensor labels, else ``None``."""
    if not isinstance(owner.labels, _OnDevice):
        return None
    labels = next(iter(owner.labels.copies.values()))
    if labels.dim() == 0:
        return None
    clone = copy.copy(owner)
    clone.labels, clone.label_key = None, BOUND_LABELS
    return clone, {BOUND_LABELS: labels}


class ClassifierGuidedScore:
    """``s(x, t) + γ ∇ₓ log p_t(y | x)`` — see :func:`classifier_guidance`."""

    def __init__(self, score: Callable, classifier: Callable, labels, scale: float, label_key: str = "y",
                 num_classes: int | None = None):
        self.score = checked_score(score)
        if not callable(classifier):
            raise TypeError(f"classifier must be callable as classifier(x, t), got {type(classifier).__name__}")
        self.classifier = classifier
        self.num_classes = _check_num_classes(num_classes)
        self.labels = None if labels is None else _check_label("labels", labels)
        if labels is not None:
            _check_class_indices("labels", labels, self.num_classes, dim1=True)
        self.scale = _finite_scale(scale)
        self.label_key = _check_label_key(label_key)

    def _sdekit_unbind(self):
        """Per-sample labels as bound conditioning (:func:`sdekit.conditioning.unbind_conditioning`)."""
        return _unbind_labels(self)

    def log_prob_grad(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        """``∇ₓ log p_t(y | x)``, shape of ``x`` (one backward pass through the classifier).

        ``labels``: this call's labels (default: the wrapper's own).
        """
        y = _batched("labels", self.labels if labels is None else labels, x)
        if y.dim() != 1 or y.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"labels must be class indices (int or (B,) integer tensor), "
                             f"got {y.dtype} {tuple(y.shape)}")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"classifier must return logits of shape (B, K) = ({x.shape[0]}, K), got {shape}")
            log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None].long())
            (grad,) = torch.autograd.grad(log_p.sum(), xg)
        return grad

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        y = _call_labels(self, "labels", model_kwargs, x)
        s = self.score(x, t, **model_kwargs)
        if self.scale == 0.0:
            return s
        return s + self.scale * self.log_prob_grad(x, t, y).to(s.dtype)


class ClassifierFreeGuided:
    """``γ·model(x, t, y) + (1 − γ)·model(x, t, ∅)`` in one forward — see :func:`classifier_free_guidance`."""

    def __init__(self, model: Callable, labels, scale: float, null_label, label_key: str = "y",
                 num_classes: int | None = None):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t, y), got {type(model).__name__}")
        self.model = model
        self.num_classes = _check_num_classes(num_classes)
        self.labels = None if labels is None else _check_label("labels", labels)
        self.null_label = _check_label("null_label", null_label)
        if isinstance(null_label, int):  # class indices: an int null label (e.g. num_classes)
            if null_label < 0:
                raise ValueError(f"null_label must be a class index >= 0, got {null_label}")
            if labels is not None:
                _check_class_indices("labels", labels, self.num_classes, null_label=null_label)
        elif self.num_classes is not None:
            raise ValueError("num_classes needs an int null_label (class indices); "
                             "with a tensor null_label the labels are embeddings")
        self.scale = _finite_scale(scale)
        self.label_key = _check_label_key(label_key)

    def _sdekit_unbind(self):
        """Per-sample labels as bound conditioning (:func:`sdekit.conditioning.unbind_conditioning`)."""
        return _unbind_labels(self)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        B = x.shape[0]
        y = _call_labels(self, "labels", model_kwargs, x)
        if isinstance(self.null_label, int) and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
            raise TypeError(f"labels must be class indices (an integer tensor) with an int null_label, got {y.dtype}")
        null = _batched("null_label", self.null_label, x, per_sample_ok=False)
        if y.shape[1:] != null.shape[1:]:
            raise ValueError(f"null_label must have the shape of one label {tuple(y.shape[1:])}, "
                             f"got {tuple(null.shape[1:])}")
        x2 = torch.cat([x, x])
        doubled = map_model_kwargs(lambda v: torch.cat([v, v]), model_kwargs)  # the rest of the conditioning
        out = self.model(x2, torch.cat([t, t]), torch.cat([y, null.to(y.dtype)]), **doubled)
        out = check_model_output("guided model", out, x2)
        cond, uncond = out[:B], out[B:]
        return torch.lerp(uncond, cond, self.scale)  # uncond + γ (cond − uncond)


def classifier_guidance(score: Callable, classifier: Callable, labels, scale: float = 1.0, *,
                        label_key: str = "y", num_classes: int | None = None) -> ClassifierGuidedScore:
    """Classifier guidance: the score model ``s(x, t) + γ ∇ₓ log p_t(y | x)``.

    Source: seed notes 000 ("Guidance scale"), 001 ("Conditioning v1"), 003
    ("Classifier guidance"); Dhariwal & Nichol 2021, Algorithm 1; Song et al.
    2021, eq. 49.  The gradient is taken by autograd (also under
    ``torch.no_grad()``), one backward pass per call, summed over the batch,
    which is exact when the classifier treats samples independently (no
    batch-norm statistics in training mode).  For an ε-network use
    ``classifier_guidance(score_from_epsilon(eps_net, sde), …)``; the seeds'
    ``ε̂ = ε − γ σ ∇ log p(y | x)`` is the same thing.

    Args:
        score: score model ``score(x, t)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` → ``(B, *D)``.
        classifier: noisy classifier ``classifier(x, t)`` → logits ``(B, K)``
            (``log_softmax`` is applied, so log-probabilities work too).
        labels: class index ``y`` (int), ``(B,)`` integer tensor (one per
            sample), or ``None``: read per call from ``model_kwargs[label_key]``.
        scale: guidance scale γ (0: unguided; 1: the conditional score).
        label_key: the keyword holding the labels when ``labels`` is ``None``
            (removed before the other keyword arguments go to ``score``).
        num_classes: optional number of classes ``K``: given labels must lie in ``[0, K)``.
    Returns:
        a score model ``guided(x, t, **model_kwargs)`` → ``(B, *D)``.
    Raises:
        TypeError: if ``score``/``classifier`` is not callable, ``labels`` is
            neither an int nor a tensor, or is a tensor of non-integer dtype,
            or ``scale`` is not a real number.
        ValueError: if ``scale`` is not finite, ``labels`` is negative, not 0-D
            or 1-D, or outside ``[0, num_classes)``, or ``num_classes`` is not
            an integer >= 1; on call, if the classifier does not return
            ``(B, K)`` or ``labels`` does not match the batch.  (Labels passed per
            call in ``model_kwargs`` are checked for dtype and shape only: a
            value check would need a host sync per call.)
    """
    return ClassifierGuidedScore(score, classifier, labels, scale, label_key, num_classes)


def classifier_free_guidance(model: Callable, labels, scale: float, null_label, *,
                             label_key: str = "y", num_classes: int | None = None) -> ClassifierFreeGuided:
    """Classifier-free guidance: ``γ·model(x, t, y) + (1 − γ)·model(x, t, ∅)``, one batched forward.

    Source: seed notes 000 ("Classifier-free-corrected noise prediction"), 001
    ("Conditioning v2"); Ho & Salimans 2022, eq. 6 (their ``w = γ − 1``).  The
    conditional and unconditional passes run as one call on the doubled batch
    ``[x; x]`` with labels ``[y; ∅]``.

    Args:
        model: conditional network ``model(x, t, y, **model_kwargs)`` → ``(B, *D)``, trained with
            the label sometimes replaced by ``null_label``.  Its output may be ε,
            a score, x̂₀, v or a denoiser output (all are affine in ε with
            label-independent weights); turn the result into a score model as
            usual, e.g. ``sdekit.score_from_epsilon(guided, sde)``.
        labels: an int, a ``(B, …)`` tensor (class indices, embeddings…), or
            ``None``: read per call from ``model_kwargs[label_key]``.
        scale: guidance scale γ (1: conditional model; 0: unconditional).
        null_label: the "no label" input ∅: an int or a tensor shaped like one label.
        label_key: the keyword holding the labels when ``labels`` is ``None``;
            the other keyword arguments reach ``model`` with their tensors doubled.
        num_classes: optional number of classes ``K`` (int ``null_label`` only):
            given labels must lie in ``[0, K)``; ``null_label`` itself may be ``K``.
    Returns:
        ``guided(x, t, **model_kwargs)`` → ``(B, *D)``, in the model's parameterisation.
    Raises:
        TypeError: if ``model`` is not callable, a label is neither int nor
            tensor, ``scale`` is not a real number, or (int ``null_label``:
            class indices) ``labels`` is a tensor of non-integer dtype.
        ValueError: if ``scale`` is not finite; with an int ``null_label``, if
            it is negative, or given ``labels`` are negative, equal to
            ``null_label`` or outside ``[0, num_classes)``; if ``num_classes`` is
            given with a tensor ``null_label`` (embeddings) or is not an integer
            >= 1; on call, if the model's output is not ``(2B, *D)`` or
            ``labels``/``null_label`` do not fit the batch.  With a tensor
            ``null_label`` (embeddings) only shapes are checked.
    """
    return ClassifierFreeGuided(model, labels, scale, null_label, label_key, num_classes)
