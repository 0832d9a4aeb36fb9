"""SoccerNet-v2 data: labels, splits, features on disk, clips and targets, and a simulator.

Nothing here imports ``torch.nn``: the data layer is shared by training,
inference, evaluation and search.
"""
