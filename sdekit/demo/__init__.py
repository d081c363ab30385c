"""Worked example: a score-based model of scikit-learn's 8×8 digits.

Run it with ``python -m sdekit.demo.digits`` (see :mod:`sdekit.demo.digits`).
The modules each hold one piece: :mod:`.data` (loading, splitting,
dequantising), :mod:`.network` (the ε-prediction MLP), :mod:`.train`
(denoising score matching, EMA, checkpoint cache), :mod:`.baseline` (the
full-covariance Gaussian), :mod:`.plots` (image grids) and :mod:`.report`
(the results table).
"""
