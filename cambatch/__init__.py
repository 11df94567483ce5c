"""cambatch: batched Class Activation Maps over image folders, with overlays and a Parquet report."""

__version__ = "0.1.0"
