"""Reading a run back without torch: `summarize`, `compare`, `gallery` (with `thumbnails`), `tables` for printing,
and the commands' choices (`options`).
"""
