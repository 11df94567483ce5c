"""Reading a run back without torch: `summarize`, `compare`, `gallery` (with `thumbnails`), and `tables` for printing."""
