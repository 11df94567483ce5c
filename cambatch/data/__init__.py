"""From files to model inputs: decoding (`decode`), uint8 batches in loader workers (`preprocess`),
nvJPEG on a GPU (`gpu_decode`).
"""
