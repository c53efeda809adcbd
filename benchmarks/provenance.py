"""Where a benchmark result came from: the commit, and whether the sqc that ran is that commit."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def git_state() -> dict[str, Any]:
    """The commit of the checkout, whether sqc's sources in the tree differ from it, and where the sqc
    that ran was imported from (the installed package; reinstall after edits, or pin a copy with
    ``pip install --no-deps --target DIR`` and ``PYTHONPATH=DIR`` so others' reinstalls cannot change it
    mid-run)."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parent
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "sqc", "passes", "formats", "targets", "pyproject.toml")
    import sqc

    imported = Path(sqc.__file__).parent
    repo = Path(__file__).resolve().parent.parent
    tree = {
        "": repo / "sqc",
        "passes": repo / "passes",
        "formats": repo / "formats",
        "targets": repo / "targets",
    }
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree_sources_modified": bool(dirty),
        # relative to the repository when inside it: results name no machine's paths
        "sqc_imported_from": (
            str(imported.relative_to(repo)) if imported.is_relative_to(repo) else f"pinned/{imported.name}"
        ),
        # True: the sqc that ran is exactly the tree's sources (so, if unmodified, exactly the commit)
        "imported_sqc_matches_tree": _digest({k: imported / k for k in tree}) == _digest(tree),
    }


def _digest(dirs: dict[str, Path]) -> str:
    """SHA-256 over the .py files of the package directories (relative name + content)."""
    import hashlib

    h = hashlib.sha256()
    for prefix, root in sorted(dirs.items()):
        files = sorted(root.glob("*.py")) if prefix == "" else sorted(root.rglob("*.py"))
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(f"{prefix}/{f.relative_to(root)}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()
