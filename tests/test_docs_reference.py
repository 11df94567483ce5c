"""The generated reference pages (docs/hooks/reference.py) hold everything the code declares.

Each test walks a declaration on its own (the typer app, `RunConfig`'s options, the report schema,
the model catalog, `cambatch`'s exports) and looks for every item on the page generated from it, so
an option, a column, a family or an export that the page misses fails here. The mkdocs build runs
the same functions (`.ci/run`, `mkdocs build --strict`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import typer
import typer.main
from conftest import REPO

import cambatch
from cambatch.cli import app
from cambatch.config import option_fields, switch
from cambatch.model.catalog import DEFAULT_MODEL, FAMILIES
from cambatch.report.schema import COLUMNS

HOOKS = REPO / "docs" / "hooks" / "reference.py"


def _load_reference():
    spec = importlib.util.spec_from_file_location("docs_reference", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def _rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("|---")]


def _sections(markdown: str) -> dict[str, str]:
    """`{"cambatch run": text of its section, ...}` from the CLI page's `## `name`` headings."""
    parts = re.split(r"^## `([^`]+)`$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ---- the CLI ----


def test_cli_page_has_every_option_of_every_command_with_its_help_and_default():
    sections = _sections(reference.cli_reference())
    group = typer.main.get_command(app)
    commands = {"cambatch": group, **{f"cambatch {name}": command for name, command in group.commands.items()}}
    assert set(sections) == set(commands)
    for name, command in commands.items():
        rows = _rows(sections[name])
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        assert len(rows) == len(params) + len([t for t in re.findall(r"^\| option ", sections[name], re.M)])
        for param in params:
            if param.param_type_name == "argument":
                spelled = f"`{param.name.upper()}{'...' if param.nargs == -1 else ''}`"
            else:
                spelled = ", ".join(f"`{flag}`" for flag in [*param.opts, *param.secondary_opts])
            row = next((r for r in rows if r.startswith(f"| {spelled} |")), None)
            assert row is not None, f"{name}: {spelled} is not on the page"
            assert row.endswith(f"| {_cell(param.help or '')} |"), (name, spelled)
            if param.required:
                assert "| required |" in row
            elif param.default not in (None, False, ()):
                assert f"| `{param.default}` |" in row, (name, spelled, param.default)


def test_cli_page_has_every_run_option_declared_in_the_config():
    run = _sections(reference.cli_reference())["cambatch run"]
    for name in option_fields():
        assert re.search(rf"^\| `{re.escape(switch(name))}`", run, re.M), name


def test_cli_page_follows_the_app_it_is_given():
    """A command or option added to an app appears on its page: nothing is listed by hand."""
    extra = typer.Typer()

    @extra.command()
    def first(count: int = typer.Option(7, "--count", "-c", help="How many.")) -> None:
        """The first command."""

    @extra.command()
    def second(target: str = typer.Argument(..., help="Where to.")) -> None:
        """The second command."""

    sections = _sections(reference.cli_reference(extra))
    assert set(sections) == {"cambatch", "cambatch first", "cambatch second"}
    assert "| `--count`, `-c` | `7` | How many. |" in sections["cambatch first"]
    assert "| `TARGET` | required | Where to. |" in sections["cambatch second"]
    assert "cambatch second TARGET" in sections["cambatch second"]


# ---- the report columns ----


def test_columns_page_has_every_column_with_its_type_and_doc_in_schema_order():
    rows = _rows(reference.columns_reference())[1:]  # after the header
    assert [re.match(r"\| `([^`]+)`", row).group(1) for row in rows] == [c.name for c in COLUMNS]
    for column, row in zip(COLUMNS, rows, strict=True):
        assert f"| {reference.arrow_type(column.type)} | {_cell(column.doc)} |" in row, column.name


@pytest.mark.parametrize(
    ("data_type", "shown"),
    [
        (pa.float32(), "float32"),
        (pa.int16(), "int16"),
        (pa.bool_(), "bool"),
        (pa.string(), "string"),
        (pa.list_(pa.float16()), "list of float16"),
        (pa.list_(pa.float32()), "list of float32"),
    ],
)
def test_arrow_types_are_named_as_numpy_and_pandas_users_know_them(data_type, shown):
    assert reference.arrow_type(data_type) == shown


# ---- the models ----


def test_models_page_has_every_family_with_its_names_and_refusal():
    rows = _rows(reference.models_reference())[1:]
    assert len(rows) == len(FAMILIES)
    for family, row in zip(FAMILIES, rows, strict=True):
        assert row.startswith(f"| {family.name} |"), row
        assert all(f"`{pattern}`" in row for pattern in family.patterns), family.name
        assert f"`{family.example}`" in row
        if family.refusal is None:
            assert "| yes |" in row
        else:
            assert f"| no | {_cell(family.refusal)} |" in row
    assert "(the default)" in next(row for row in rows if f"`{DEFAULT_MODEL}`" in row)


# ---- the Python API ----


def test_api_page_documents_every_export_by_the_object_it_is():
    page = reference.api_reference()
    targets = dict(re.findall(r"^## `cambatch\.(\w+)`\n\n::: ([\w.]+)$", page, re.M))
    assert set(targets) == set(cambatch._LAZY)
    for name, target in targets.items():
        module, attribute = target.rsplit(".", 1)
        assert getattr(importlib.import_module(module), attribute) is getattr(cambatch, name), name


# ---- the exit codes ----


def test_exit_codes_page_has_every_code_with_its_meaning():
    from cambatch.errors import ExitCode

    rows = _rows(reference.exits_reference())[1:]  # under the header
    assert len(rows) == len(ExitCode)
    for code, row in zip(ExitCode, rows, strict=True):
        assert row == f"| {int(code)} | `{code.name}` | {_cell(code.meaning)} |"


# ---- the pages and the build ----


def test_each_generated_section_is_on_its_page_and_every_placeholder_is_known():
    pages = {path.name: path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").rglob("*.md"))}
    used = {name: page for page, text in pages.items() for name in reference.PLACEHOLDER.findall(text)}
    expected = {"cli": "cli.md", "columns": "report.md", "models": "models.md", "api": "api.md", "exits": "cli.md"}
    assert used == {**expected, "metrics": "check.md"}
    for page, text in pages.items():  # a misspelt placeholder would stay an invisible HTML comment
        left = [line for line in reference.expand(text).splitlines() if line.startswith("<!-- generated")]
        assert not left, (page, left)
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        reference.expand("<!-- generated: nope -->")


def test_generating_the_pages_never_imports_torch():
    """The site builds without the model side: what the hook imports stays torch-free."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('reference', {str(HOOKS)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "for generate in module.GENERATORS.values(): generate()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    # The same cambatch as this test process's (a checkout on PYTHONPATH, or the installed one).
    path = os.pathsep.join([str(Path(cambatch.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
