"""`cambatch.errors`: every exit code declared once (`ExitCode`), and README's exit-code table agrees with it."""

from __future__ import annotations

from conftest import REPO

from cambatch.errors import CambatchError, ExitCode, OutputLocked, OutputUnwritable, UsageError


def exit_code_table(markdown: str) -> dict[int, str]:
    """The `| code | meaning |` table, wherever it is in the text: code -> meaning."""
    lines = markdown.splitlines()
    for number, line in enumerate(lines):
        if [cell.strip().lower() for cell in line.strip().strip("|").split("|")] == ["code", "meaning"]:
            rows = {}
            for row in lines[number + 2 :]:  # past the header's `|---|---|`
                if not row.strip().startswith("|"):
                    break
                code, meaning = (cell.strip() for cell in row.strip().strip("|").split("|", 1))
                rows[int(code.strip("`"))] = meaning
            return rows
    raise AssertionError("README.md has no `| code | meaning |` table")


def test_readmes_exit_code_table_lists_exactly_the_declared_codes():
    table = exit_code_table((REPO / "README.md").read_text(encoding="utf-8"))
    assert sorted(table) == sorted(int(code) for code in ExitCode)
    assert all(table.values()) and all(code.meaning for code in ExitCode)


def test_the_table_reader_finds_the_table_anywhere_and_reads_every_row():
    text = "# x\n\nprose | with a bar\n\n| Code | Meaning |\n|---|---|\n| `0` | fine |\n| 2 | a \\| b |\n\nmore\n"
    assert exit_code_table(text) == {0: "fine", 2: "a \\| b"}


def test_each_error_carries_its_declared_code():
    assert [e.exit_code for e in (CambatchError, UsageError, OutputLocked, OutputUnwritable)] == [
        ExitCode.FAILED,
        ExitCode.USAGE,
        ExitCode.LOCKED,
        ExitCode.UNWRITABLE,
    ]
