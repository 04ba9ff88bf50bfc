"""Mean of progress.csv columns over a window of iterations, one line per run: a training curve's level at
some point, read the same way for every run compared (e.g. the last ten iterations of two settings).

    python experiments/progress_window.py runs/a runs/b --first 91 --last 100 \
        --columns post_update/return line_search/backtracks line_search/accepted

Every run must hold every iteration of the window (a shorter run is an error, not a shorter mean).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def window_means(run: str | Path, columns: list[str], first: int, last: int) -> dict[str, float]:
    path = Path(run) / "progress.csv" if Path(run).is_dir() else Path(run)
    with open(path) as f:
        rows = {int(r["iteration"]): r for r in csv.DictReader(f)}
    missing = [i for i in range(first, last + 1) if i not in rows]
    if missing:
        raise SystemExit(f"{path}: iterations {missing[0]}..{missing[-1]} of the window {first}-{last} are missing "
                         f"(it holds {min(rows, default=0)}-{max(rows, default=0)})")
    out = {}
    for c in columns:
        if c not in rows[first]:
            raise SystemExit(f"{path}: no column {c!r} (it has: {', '.join(rows[first])})")
        values = [float(rows[i][c]) for i in range(first, last + 1) if rows[i][c] != ""]
        out[c] = sum(values) / len(values) if values else math.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (or progress.csv files)")
    parser.add_argument("--first", type=int, required=True, help="first iteration of the window")
    parser.add_argument("--last", type=int, required=True, help="last iteration of the window (included)")
    parser.add_argument("--columns", nargs="+", default=["post_update/return"])
    args = parser.parse_args()
    if not 1 <= args.first <= args.last:
        raise SystemExit(f"--first {args.first} and --last {args.last}: need 1 <= first <= last")
    print("run," + ",".join(args.columns))
    for run in args.runs:
        means = window_means(run, args.columns, args.first, args.last)
        print(f"{run}," + ",".join(f"{means[c]:.4g}" for c in args.columns))


if __name__ == "__main__":
    main()
