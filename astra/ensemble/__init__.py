"""Ensembles of a search's trials: selection on validation, averaged per-position outputs, reports."""
