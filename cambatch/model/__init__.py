"""The classifier: building and splitting it (`build`), weights files (`checkpoints`), names (`catalog`),
precision and compilation (`accel`).
"""
