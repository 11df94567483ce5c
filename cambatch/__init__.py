"""cambatch: batched Class Activation Maps over image folders, with overlays and a Parquet report."""

__version__ = "0.1.0"

# The Python API, imported on first use: `import cambatch` stays cheap (no torch, no pandas)
# and `cambatch --help` answers at once. Name -> (module, attribute).
_LAZY = {
    "run": ("api", "run"),
    "RunConfig": ("config", "RunConfig"),
    "load_report": ("report.reader", "load_report"),
    "load_map": ("report.reader", "load_map"),
    "map_stack": ("report.reader", "map_stack"),
    "load_embeddings": ("report.reader", "load_embeddings"),
    "read_settings": ("report.parts", "read_settings"),
    "per_image": ("report.reader", "per_image"),
    "summarize_report": ("inspection.summarize", "summarize"),
    "summarize_run": ("inspection.summarize", "summarize_run"),
    "Thresholds": ("inspection.options", "Thresholds"),
    "compare_runs": ("inspection.compare", "compare_runs"),
    "compare_reports": ("inspection.compare", "compare_reports"),
    "build_gallery": ("inspection.gallery", "build_gallery"),
    "find_shortcuts": ("inspection.shortcuts", "find_shortcuts"),
    "shortcuts_run": ("inspection.shortcuts", "shortcuts_run"),
    "render_overlays": ("inspection.overlays", "render_overlays"),
    "find_slices": ("bias.slices", "find_slices"),
    "read_slices": ("bias.slices", "read_slices"),
    "reliance_run": ("bias.reliance", "reliance_run"),
    "evaluate": ("evaluation.run", "evaluate"),
    "check_run": ("checks.run", "check_run"),
    "load_policy": ("checks.policy", "load_policy"),
    "load_annotations": ("annotations.readers", "load_annotations"),
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        module, attribute = _LAZY[name]
        value = getattr(import_module(f".{module}", __name__), attribute)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'cambatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
