"""Compositions of the layers below: explain to a folder, evaluate, L-CAM training, cohorts."""
