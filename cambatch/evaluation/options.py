"""The defaults of `cambatch evaluate`, declared once; plain Python, so the CLI lists them without numpy."""

DEFAULT_THRESHOLDS = 100  # CAM thresholds `evaluate` sweeps (the protocol's interval 0.01)
