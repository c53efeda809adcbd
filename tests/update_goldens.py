"""Rewrite the golden files of ``tests/test_golden.py`` (``make goldens``): run after an intended change
to a pass, a coder or the IR's text form, then review ``git diff tests/golden``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_cases import CASES, GOLDEN, golden_path, render


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
