"""Golden-file tests of the passes on the IR's text form (``tests/golden_cases.py`` says what and why).

A difference is shown as a unified diff. If the change is intended, ``make goldens`` rewrites the
files and ``git diff tests/golden`` shows what moved.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_cases import CASES, golden_path, readme_pass_table, render


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pipeline_matches_its_golden_file(case, tmp_path: Path) -> None:
    expected = golden_path(case).read_text()
    actual = render(case, tmp_path)
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"tests/golden/{case.name}.ir",
                "this run",
                n=1,
            )
        )
        pytest.fail(
            f"{case.name} differs from its golden file (refresh with `make goldens` if intended):\n{diff}"
        )


def test_every_golden_file_has_a_case() -> None:
    names = {golden_path(c).name for c in CASES}
    stray = sorted(p.name for p in golden_path(CASES[0]).parent.glob("*.ir") if p.name not in names)
    assert not stray, f"golden files without a case (delete them or add the case): {stray}"


def test_the_readme_pass_table_is_what_the_registry_says() -> None:
    """The README's table of passes, options and defaults is ``sqc passes --markdown``'s output (a
    default changed in code changes it there too: ``make goldens`` rewrites it)."""
    from sqc.app.cli.catalog import builtin_markdown

    _, table, _ = readme_pass_table()
    assert table == builtin_markdown(), "README.md's pass table is stale: run `make goldens`"
