"""ASTRA: an Action Spotting TRAnsformer for SoccerNet-v2, with search and ensembling on Ray."""

__version__ = "0.1.0"
