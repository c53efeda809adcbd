"""Rewrite the golden files of ``tests/test_golden.py`` (``make goldens``) and the README's generated pass
table: run after an intended change to a pass, its options, a coder or the IR's text form, then review
``git diff tests/golden README.md``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_cases import (
    CASES,
    GOLDEN,
    PASSES_BEGIN,
    PASSES_END,
    README,
    golden_path,
    readme_pass_table,
    render,
)


def main() -> int:
    GOLDEN.mkdir(exist_ok=True)
    changed = 0
    with tempfile.TemporaryDirectory() as work:
        for case in CASES:
            text = render(case, Path(work))
            path = golden_path(case)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed += 1
                print(f"updated {path.relative_to(GOLDEN.parent.parent)}")
    print(f"{changed} of {len(CASES)} golden files changed")
    from sqc.app.cli.catalog import builtin_markdown

    head, table, tail = readme_pass_table()
    if table != builtin_markdown():
        README.write_text(f"{head}{PASSES_BEGIN}{builtin_markdown()}{PASSES_END}{tail}", encoding="utf-8")
        print("updated README.md's pass table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
