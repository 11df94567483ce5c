"""Bias inspection: error slices over the report's embeddings (`slices`, torch-free) and the causal test of where
a class looks (`reliance`, which runs the network).
"""
