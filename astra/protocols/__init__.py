"""Evaluation protocols: how the paper's figures are produced from many runs (docs/protocols.md).

P1 (:mod:`astra.protocols.p1`): every configuration trained with several seeds as Ray Tune trials,
each run's checkpoint selected on valid and the test split scored as it falls; the report
(:mod:`astra.protocols.report`) gives the mean and standard deviation over the seeds and compares
each configuration with the first, with the statistics of :mod:`astra.protocols.statistics`.
Nothing here imports torch or Ray at import time.
"""
