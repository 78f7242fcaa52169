"""The benchmarks' figure output: saved under the run's folder, copied into docs/img on request."""
from __future__ import annotations

import shutil
from pathlib import Path

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def save_figure(fig, out: Path, name: str, docs: bool = False) -> Path:
    """Save ``fig`` as ``out/name`` (and a copy in docs/img when ``docs``); print its path."""
    fig.tight_layout()
    path = Path(out) / name
    fig.savefig(path, dpi=110)
    if docs:
        shutil.copy(path, DOCS_IMG / name)
    print(f"figure: {path}")
    return path
