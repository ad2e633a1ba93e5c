"""GNRI and its labelled variants, each ``invert(denoiser, x0, grid, cond, **options)``.

- :mod:`gnri.methods.gnri`: the paper (arXiv 2312.12540, Eq. 9-10), Newton step through the network.
- :mod:`gnri.methods.gnri_official`: the public code's sign step (``dvirsamuel/NewtonRaphsonInversion``).
- :mod:`gnri.methods.newton_krylov`: Jacobian-free Newton-Krylov on the same residual (beyond the paper).
"""
