"""ODE states as a tensor or a tuple of tensors, flattened to one vector for the solvers (torchdiffeq's convention)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Union

import torch

State = Union[torch.Tensor, tuple]


def rms_norm(v: torch.Tensor) -> torch.Tensor:
    """Root-mean-square of all elements of ``v`` (0-d); 0 for an empty tensor."""
    if v.numel() == 0:
        return v.new_zeros(())
    return v.abs().pow(2).mean().sqrt()


def mixed_norm(vs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Largest RMS over the tensors of a tuple state (torchdiffeq's default norm for tuples)."""
    if len(vs) == 0:
        return torch.zeros(())
    return torch.stack([rms_norm(v) for v in vs]).max()


@dataclass(frozen=True)
class FlatState:
    """How a state (one tensor or a tuple of tensors) maps to one flat vector and back.

    Attributes:
        shapes: the shape of each tensor, in order.
        is_tuple: whether the user's state is a tuple (else one tensor).
    """

    shapes: tuple
    is_tuple: bool

    @staticmethod
    def of(y0: State, name: str = "y0") -> tuple[FlatState, torch.Tensor]:
        """Describe ``y0`` and return it flattened to ``(N,)`` (tuple members promoted to a common dtype).

        Raises:
            TypeError: ``y0`` neither a tensor nor a tuple of tensors, or not floating point.
        """
        if isinstance(y0, torch.Tensor):
            parts, is_tuple = (y0,), False
        elif isinstance(y0, tuple) and all(isinstance(p, torch.Tensor) for p in y0):
            parts, is_tuple = tuple(y0), True
        else:
            raise TypeError(f"{name} must be a tensor or a tuple of tensors, got {type(y0).__name__}")
        for i, p in enumerate(parts):
            if not (p.is_floating_point() or p.is_complex()):
                where = f"{name}[{i}]" if is_tuple else name
                raise TypeError(f"{where} must be a floating point tensor, got dtype {p.dtype}")
        if not parts:
            raise ValueError(f"{name} is an empty tuple; it needs at least one tensor")
        dtype = parts[0].dtype
        for p in parts[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        device = parts[0].device
        for i, p in enumerate(parts):
            if p.device != device:
                raise ValueError(f"{name}[{i}] is on {p.device}, {name}[0] on {device}: put the state on one device")
        flat = torch.cat([p.reshape(-1).to(dtype) for p in parts])
        return FlatState(tuple(p.shape for p in parts), is_tuple), flat

    @property
    def numel(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes)

    def unflatten(self, flat: torch.Tensor, lead: tuple = ()) -> State:
        """``(*lead, N)`` → the user's structure, each tensor ``(*lead, *shape)``."""
        parts, start = [], 0
        for s in self.shapes:
            n = int(torch.Size(s).numel())
            parts.append(flat[..., start:start + n].reshape(tuple(lead) + tuple(s)))
            start += n
        return tuple(parts) if self.is_tuple else parts[0]

    def flatten(self, value: State, name: str = "func") -> torch.Tensor:
        """The user's structure (e.g. what ``func`` returned) → ``(N,)``, checking every shape.

        Raises:
            ValueError: a tensor of the wrong shape or a tuple of the wrong length.
            TypeError: a value of the wrong kind.
        """
        parts = value if self.is_tuple else (value,)
        if self.is_tuple and not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must return a tuple of {len(self.shapes)} tensors (the state is a tuple), "
                            f"got {type(value).__name__}")
        if len(parts) != len(self.shapes):
            raise ValueError(f"{name} returned {len(parts)} tensors, the state has {len(self.shapes)}")
        out = []
        for i, (p, s) in enumerate(zip(parts, self.shapes)):
            where = f"{name} output[{i}]" if self.is_tuple else f"{name} output"
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{where} must be a tensor, got {type(p).__name__}")
            if tuple(p.shape) != tuple(s):
                what = f"{name} returned shape {tuple(p.shape)}" + (f" at position {i}" if self.is_tuple else "")
                raise ValueError(f"{what}, expected the state's shape {tuple(s)}")
            out.append(p.reshape(-1))
        return torch.cat(out) if len(out) > 1 else out[0]

    def tolerance(self, name: str, tol) -> float | torch.Tensor:
        """``rtol``/``atol`` as a float or a flat ``(N,)`` tensor.

        Accepts a real number, a tensor broadcastable to the state (single
        tensor), or, for a tuple state, a sequence with one tolerance per tensor.

        Raises:
            ValueError: negative, non-finite or wrongly shaped tolerances.
            TypeError: not a number, tensor or sequence.
        """
        if isinstance(tol, bool):
            raise TypeError(f"{name} must be a positive real number or tensor, got a bool")
        if isinstance(tol, (int, float)):
            if not (tol >= 0 and tol < float("inf")):
                raise ValueError(f"{name} must be finite and >= 0, got {tol}")
            return float(tol)
        if isinstance(tol, torch.Tensor):
            if tol.requires_grad:
                raise ValueError(f"{name} cannot require gradient")
            if tol.numel() == 1:
                return self.tolerance(name, float(tol))
            if self.is_tuple:
                raise ValueError(f"{name} for a tuple state must be a number or one tolerance per tensor")
            try:
                full = torch.broadcast_to(tol, self.shapes[0])
            except RuntimeError:
                raise ValueError(f"{name} of shape {tuple(tol.shape)} does not broadcast to the state's "
                                 f"shape {tuple(self.shapes[0])}") from None
            return self._check_tensor_tol(name, full.reshape(-1))
        if isinstance(tol, (tuple, list)):
            if not self.is_tuple or len(tol) != len(self.shapes):
                raise ValueError(f"a sequence {name} needs a tuple state with one tolerance per tensor "
                                 f"({len(self.shapes)}), got {len(tol)}")
            parts = [torch.as_tensor(v, dtype=torch.float64).expand(int(torch.Size(s).numel()))
                     for v, s in zip(tol, self.shapes)]
            return self._check_tensor_tol(name, torch.cat(parts))
        raise TypeError(f"{name} must be a real number, a tensor or a sequence, got {type(tol).__name__}")

    @staticmethod
    def _check_tensor_tol(name: str, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0 everywhere")
        return t

    def default_norm(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """torchdiffeq's default error norm: RMS over a tensor state, the largest per-tensor RMS over a tuple."""
        if not self.is_tuple:
            return rms_norm
        return lambda flat: mixed_norm(tuple(self.unflatten(flat)))

    def user_norm(self, norm: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
        """Wrap a user's ``norm(state) -> scalar`` (state in the user's structure) as a norm of the flat vector."""
        return lambda flat: torch.as_tensor(norm(self.unflatten(flat)), dtype=flat.dtype, device=flat.device).reshape(())
