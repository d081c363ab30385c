"""Brownian motion for SDE solvers: a counter-based Brownian tree, a generator stream, torchsde adapters."""

from .external import CallableBrownian
from .sequential import SequentialBrownian
from .tree import BrownianTree, depth_for_step

__all__ = ["BrownianTree", "CallableBrownian", "SequentialBrownian", "depth_for_step"]
