"""Evaluation: feature extraction, k-NN, linear probe, feature-quality metrics, reports."""
