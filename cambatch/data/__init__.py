"""From files to model inputs: decoding (`decode`), a file's input and overlay arrays (`inputs`, torch-free),
a CPU run's decoding worker processes (`loader`, torch-free), uint8 batches as tensors (`preprocess`), nvJPEG
on a GPU (`gpu_decode`).
"""
