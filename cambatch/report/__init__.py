"""The Parquet report: its columns (`schema`, torch-free), its files (`parts`), the writer and the reader."""
