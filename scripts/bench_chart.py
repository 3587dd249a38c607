#!/usr/bin/env python3
"""Draws failfast vs its hand-written baseline, per benchmark group, from criterion's output.

Usage (after `cargo bench --all-features --bench overhead`):

    python3 scripts/bench_chart.py [target/criterion] [benches/overhead.svg]

Reads `<criterion>/<group>/{failfast,baseline}/new/estimates.json` (criterion's median point
estimate) and writes an SVG with one pair of bars per group, each pair scaled to its own longer
bar, labelled with the medians and the ratio. Needs only the Python standard library. Prints the
same figures as a Markdown table, for BENCHMARKS.md.
"""

import json
import sys
from pathlib import Path

ORDER = [
    "inline/futures-timer",
    "inline/async-io",
    "inline/tokio-timer",
    "spawn/tokio",
    "spawn/smol",
    "spawn/async-std",
]


def median_ns(path: Path) -> float:
    with path.open() as f:
        return json.load(f)["median"]["point_estimate"]


def human(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "benches/overhead.svg")
    rows = []
    for group in ORDER:
        directory = root / group.replace("/", "_")
        try:
            ours = median_ns(directory / "failfast" / "new" / "estimates.json")
            base = median_ns(directory / "baseline" / "new" / "estimates.json")
        except FileNotFoundError:
            print(f"skipping {group}: no criterion output", file=sys.stderr)
            continue
        rows.append((group, ours, base))
    if not rows:
        sys.exit(f"no criterion output under {root}")

    print("| group | failfast (median) | baseline (median) | ratio |")
    print("|---|---|---|---|")
    for group, ours, base in rows:
        print(f"| {group} | {human(ours)} | {human(base)} | {ours / base:.2f}x |")

    width, label_w, bar_w, row_h = 760, 170, 420, 56
    height = 50 + row_h * len(rows) + 30
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="24" font-size="16" font-weight="bold">'
        "failfast vs hand-written baseline: median time per aggregate (ready services)</text>",
        '<rect x="10" y="34" width="12" height="10" fill="#d9534f"/>'
        '<text x="27" y="44">failfast</text>'
        '<rect x="100" y="34" width="12" height="10" fill="#5b7db1"/>'
        '<text x="117" y="44">baseline</text>'
        '<text x="200" y="44" fill="#555">each pair scaled to its longer bar</text>',
    ]
    for i, (group, ours, base) in enumerate(rows):
        y = 60 + i * row_h
        longest = max(ours, base)
        svg.append(f'<text x="10" y="{y + 20}">{group}</text>')
        for j, (value, colour) in enumerate([(ours, "#d9534f"), (base, "#5b7db1")]):
            length = max(1.0, bar_w * value / longest)
            by = y + 4 + j * 20
            svg.append(
                f'<rect x="{label_w}" y="{by}" width="{length:.1f}" height="16" fill="{colour}"/>'
            )
            svg.append(f'<text x="{label_w + length + 6:.1f}" y="{by + 13}">{human(value)}</text>')
        svg.append(
            f'<text x="{width - 60}" y="{y + 24}" font-weight="bold">{ours / base:.2f}x</text>'
        )
    svg.append("</svg>")
    out.write_text("\n".join(svg) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
