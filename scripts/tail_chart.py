#!/usr/bin/env python3
"""Draws The Tail at Scale results: request latency percentiles per strategy and fan-out.

Usage (after `cargo run --release --example tail_at_scale -- --csv target/tail.csv`):

    python3 scripts/tail_chart.py [target/tail.csv] [docs/tail_at_scale.svg]

Reads the example's CSV (fanout, strategy, p50_ms, p99_ms, p999_ms, extra_calls_pct,
failed_pct) and writes an SVG with one panel per fan-out: for each strategy, three bars (p50,
p99, p99.9) on a logarithmic scale in milliseconds, labelled with p99.9 and the extra calls.
Needs only the Python standard library. Prints the same figures as a Markdown table, for
BENCHMARKS.md.
"""

import csv
import math
import sys
from pathlib import Path

COLOURS = {"p50_ms": "#9ecae1", "p99_ms": "#4292c6", "p999_ms": "#08306b"}
LABELS = {"p50_ms": "p50", "p99_ms": "p99", "p999_ms": "p99.9"}
LOW, HIGH = 1.0, 2000.0  # the log scale, in ms


def y_of(ms: float, top: float, height: float) -> float:
    ms = min(max(ms, LOW), HIGH)
    return top + height - height * (math.log10(ms) - math.log10(LOW)) / (
        math.log10(HIGH) - math.log10(LOW)
    )


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "target/tail.csv")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/tail_at_scale.svg")
    with source.open() as f:
        rows = list(csv.DictReader(f))
    fanouts = sorted({int(r["fanout"]) for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))

    # Wide enough for the longest strategy name under its bars.
    panel_w, panel_h, top, left = max(420, 92 * len(strategies)), 300, 60, 60
    width = left + panel_w * len(fanouts) + 20
    height = top + panel_h + 120
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">'
        "The Tail at Scale with failfast: request latency (ms, log scale) per strategy</text>",
        f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">'
        "backends: 99% take 1-10 ms, 1% stall 50-1000 ms; labels: p99.9 and extra calls</text>",
    ]
    for tick in [1, 10, 100, 1000]:
        y = y_of(tick, top, panel_h)
        svg.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{tick}</text>')
        svg.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#ddd"/>'
        )
    for p, fanout in enumerate(fanouts):
        x0 = left + p * panel_w
        svg.append(
            f'<text x="{x0 + panel_w / 2}" y="{top + panel_h + 60}" text-anchor="middle" '
            f'font-size="13">fan-out {fanout}</text>'
        )
        slot = (panel_w - 20) / len(strategies)
        for s, strategy in enumerate(strategies):
            row = next(r for r in rows if int(r["fanout"]) == fanout and r["strategy"] == strategy)
            bar = (slot - 10) / 3
            for b, key in enumerate(["p50_ms", "p99_ms", "p999_ms"]):
                value = float(row[key])
                x = x0 + 10 + s * slot + b * bar
                y = y_of(value, top, panel_h)
                svg.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" '
                    f'height="{top + panel_h - y:.1f}" fill="{COLOURS[key]}">'
                    f"<title>{strategy}, fan-out {fanout}: {LABELS[key]} {value:.1f} ms</title></rect>"
                )
            centre = x0 + 10 + s * slot + (slot - 10) / 2
            svg.append(
                f'<text x="{centre:.1f}" y="{top + panel_h + 14}" text-anchor="middle" font-size="10">{strategy}</text>'
            )
            p999 = float(row["p999_ms"])
            extra = float(row["extra_calls_pct"])
            svg.append(
                f'<text x="{centre:.1f}" y="{top + panel_h + 28}" text-anchor="middle" '
                f'fill="#555">{p999:.0f} ms</text>'
            )
            svg.append(
                f'<text x="{centre:.1f}" y="{top + panel_h + 42}" text-anchor="middle" '
                f'fill="#555">+{extra:.1f}%</text>'
            )
    for i, key in enumerate(["p50_ms", "p99_ms", "p999_ms"]):
        x = left + i * 80
        y = height - 20
        svg.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{COLOURS[key]}"/>')
        svg.append(f'<text x="{x + 16}" y="{y}">{LABELS[key]}</text>')
    svg.append("</svg>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(svg) + "\n")

    print("| fan-out | strategy | p50 | p99 | p99.9 | extra calls | failed requests |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['fanout']} | {r['strategy']} | {float(r['p50_ms']):.1f} ms | "
            f"{float(r['p99_ms']):.1f} ms | {float(r['p999_ms']):.1f} ms | "
            f"{float(r['extra_calls_pct']):.2f}% | {float(r['failed_pct']):.3f}% |"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
