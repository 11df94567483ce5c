"""A run as a job: the loop (`pipeline`), the device side (`engine`), the per-image writer (`writer`),
resume, locks, signals, manifests, progress and the machine's defaults (`tuning`).
"""
