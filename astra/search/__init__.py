"""The search platform: search spaces, trials on Ray Tune with Optuna and ASHA, per-class Soft-NMS
window search, the results table.

The only package that imports ``ray.tune`` and ``optuna``; nothing imports them at import time of
this package, so that the window search (:mod:`astra.search.windows`, Optuna without Ray) serves the
ensembles without Ray.
"""
