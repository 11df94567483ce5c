"""The reference tables of the docs site, generated from the code's own declarations at build time.

mkdocs.yml names this file under `hooks:`. In every page, a line `<!-- generated: NAME -->` is
replaced by `GENERATORS[NAME]()`: the CLI reference from the typer app, the report columns from
`cambatch.report.schema`, the model families from `cambatch.model.catalog`, the exit codes from
`cambatch.errors.ExitCode`, the check metrics from `cambatch.checks.metrics`, and the Python API's
mkdocstrings directives from `cambatch._LAZY`. Nothing here restates an option, a column or a family,
so a page cannot drift from the code; tests/test_docs_reference.py calls these functions and checks
them against the same declarations.

What is imported here is torch-free (`cambatch.cli` loads torch only inside its commands), so the
site builds without the model side.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"^<!-- generated: ([a-z]+) -->$", re.M)
# Arrow's names for the float types, as a pandas or numpy user knows them.
_ARROW_NAMES = {"halffloat": "float16", "float": "float32", "double": "float64"}


def _cell(text: Any) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- the command line: every command and option of `cambatch.cli.app` ----


def cli_commands(app: Any = None) -> dict[str, Any]:
    """`{"cambatch": group, "cambatch run": command, ...}`: the app as click (or typer's click) objects."""
    import typer.main

    if app is None:
        from cambatch.cli import app
    group = typer.main.get_command(app)
    return {"cambatch": group, **{f"cambatch {name}": command for name, command in group.commands.items()}}


def documented_params(command: Any) -> list[Any]:
    """The parameters a user can give: every option and argument that is not hidden."""
    return [param for param in command.params if not getattr(param, "hidden", False)]


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def param_flags(param: Any) -> list[str]:
    """How a parameter is spelled on the command line: its flags, or its argument's metavar."""
    if _is_argument(param):
        return [param.name.upper() + ("..." if param.nargs == -1 else "")]
    return [*param.opts, *param.secondary_opts]


def _default(param: Any) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False):
        return "on" if param.default else "off"
    if param.default is None or param.default == ():
        return ""  # the help says what decides it (the model, the machine, an environment variable)
    return f"`{param.default}`"


def _usage(name: str, command: Any) -> str:
    pieces = [name]
    if any(not _is_argument(p) for p in documented_params(command)):
        pieces.append("[OPTIONS]")
    if hasattr(command, "commands"):
        pieces.append("COMMAND")
    for param in documented_params(command):
        if _is_argument(param):
            metavar = param_flags(param)[0]
            pieces.append(metavar if param.required else f"[{metavar}]")
    return " ".join(pieces)


def _params_table(params: list[Any]) -> str:
    return _table(
        ["option", "default", "meaning"],
        [(", ".join(f"`{flag}`" for flag in param_flags(p)), _default(p), p.help or "") for p in params],
    )


def cli_reference(app: Any = None) -> str:
    """Markdown for every command of the app: its help, usage, and a table of every option and argument.

    The options of `cambatch run` come in the groups `cambatch run --help` shows (typer's help panels).
    """
    sections = []
    for name, command in cli_commands(app).items():
        params = documented_params(command)
        parts = [f"## `{name}`", "", _cell(command.help or ""), "", "```text", _usage(name, command), "```", ""]
        panels: dict[str, list[Any]] = {}
        for param in params:
            panels.setdefault(getattr(param, "rich_help_panel", None) or "", []).append(param)
        for panel, members in panels.items():
            if panel:
                parts += [f"**{panel}**", ""]
            parts += [_params_table(members), ""]
        if not params:
            parts += ["No options.", ""]
        sections.append("\n".join(parts))
    return "\n".join(sections)


# ---- the report: every column of `cambatch.report.schema.COLUMNS` ----


def arrow_type(data_type: Any) -> str:
    """An Arrow type as the table shows it: `float32`, `list of float16`, ..."""
    value_type = getattr(data_type, "value_type", None)
    if value_type is not None:
        return f"list of {arrow_type(value_type)}"
    return _ARROW_NAMES.get(str(data_type), str(data_type))


def columns_reference() -> str:
    """A table of every report column, in the schema's order: name, type and meaning."""
    from cambatch.report.schema import COLUMNS

    return _table(["column", "type", "meaning"], [(f"`{c.name}`", arrow_type(c.type), c.doc) for c in COLUMNS])


# ---- the models: every family of `cambatch.model.catalog.FAMILIES` ----


def models_reference() -> str:
    """A table of every model family: the `--model` names it covers, whether `cam` works, and why not."""
    from cambatch.model.catalog import DEFAULT_MODEL, FAMILIES

    rows = []
    for family in FAMILIES:
        names = ", ".join(f"`{pattern}`" for pattern in family.patterns)
        if DEFAULT_MODEL in family.patterns:
            names += " (the default)"
        cam = "yes" if family.refusal is None else "no"
        rows.append((family.name, names, cam, family.refusal or "", f"`{family.example}`"))
    return _table(["family", "`--model`", "`cam`", "why `cam` is refused", "tested with"], rows)


# ---- the exit codes: `cambatch.errors.ExitCode` ----


def exits_reference() -> str:
    """A table of every exit code and its meaning, as `ExitCode` declares them."""
    from cambatch.errors import ExitCode

    return _table(["code", "name", "meaning"], ((int(code), f"`{code.name}`", code.meaning) for code in ExitCode))


# ---- the metrics of `cambatch check`: `cambatch.checks.metrics` ----


def metrics_reference() -> str:
    """The check metric catalog as a table (`metrics_markdown`, declared beside the metrics)."""
    from cambatch.checks.metrics import metrics_markdown

    return metrics_markdown()


# ---- the Python API: every name `import cambatch` exports ----


def api_names() -> dict[str, str]:
    """`{"run": "cambatch.api.run", ...}`: each public name and the object that implements it."""
    import cambatch

    return {name: f"cambatch.{module}.{attribute}" for name, (module, attribute) in cambatch._LAZY.items()}


def api_reference() -> str:
    """A heading and a mkdocstrings directive per exported name (`cambatch.run` is `cambatch.api.run`)."""
    return "\n".join(f"## `cambatch.{name}`\n\n::: {target}\n" for name, target in api_names().items())


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "columns": columns_reference,
    "models": models_reference,
    "api": api_reference,
    "exits": exits_reference,
    "metrics": metrics_reference,
}


def expand(markdown: str) -> str:
    """`markdown` with each placeholder replaced by its generated text; an unknown name is an error."""

    def generated(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return PLACEHOLDER.sub(generated, markdown)


# ---- mkdocs hooks ----


def on_config(config: Any) -> Any:
    # Document the checkout being built, not another cambatch that happens to be installed (an editable
    # install of a different worktree): mkdocstrings reads the same source through `paths: [.]`.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)
