"""From files to model inputs: decoding (`decode`), a file's input and overlay arrays (`inputs`, torch-free),
uint8 batches in loader workers (`preprocess`), nvJPEG on a GPU (`gpu_decode`).
"""
