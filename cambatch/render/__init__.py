"""Heatmap overlays: colormaps (`colormaps`) and the blend over the photo (`overlay`). Torch-free."""
