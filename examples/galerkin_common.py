"""What the neural-Galerkin examples share: a command line built from a config dataclass."""
from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable


def main_from_config(doc: str, out: str, config, quick: dict, run: Callable, argv=None) -> dict:
    """Parse ``--out``, ``--quick`` and one option per field of ``config`` (a dataclass
    instance: its defaults), run ``run(cfg, Path(out))`` and print its metrics."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=out)
    parser.add_argument("--quick", action="store_true", help=f"a short run ({', '.join(f'{k}={v}' for k, v in quick.items())})")
    for name, value in asdict(config).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv[1:] if argv else None)
    cfg = replace(config, **(quick if args.quick else {}))
    cfg = replace(cfg, **{k: v for k, v in vars(args).items() if k in asdict(cfg) and v is not None})
    metrics = run(cfg, Path(args.out))
    for key, value in metrics.items():
        print(f"{key}: {value:.12e}" if isinstance(value, float) else f"{key}: {value}")
    return metrics


def two_panels(size: tuple[float, float]):
    """A figure with two axes side by side (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=size)


def save(fig, path: Path) -> None:
    """Lay out, write (120 dpi) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
