"""Plot the saved benchmark results against their targets into docs/benchmarks.png.

Reads ``bench/results/*.json`` (each one benchmark's stdout, e.g.
``python bench/peers.py > bench/results/peers.json``). Left: each result as a fraction of its
target, 1.0 = exactly on target (for "at most" targets — memory, drain — target over measured,
so right of 1.0 always means met), labelled with the measured value. Right: the concurrency
speed-up against N, the ideal N and the 0.8 * N target. Needs matplotlib.

    python bench/plot.py [--results bench/results] [--out docs/benchmarks.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def bars(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(label, measured/target with 1 = on target, value text) per result found."""
    out: list[tuple[str, float, str]] = []
    if (r := results.get("throughput-noop")) and "ratio" in r:
        out.append(("throughput vs raw pika,\nsame messages (≥ 0.7x)", r["ratio"] / r["target_ratio"], f"{r['ratio']:.2f}x"))
    if r := results.get("peers-faststream"):
        out.append(("vs FastStream\n(≥ 2x)", r["ratio"] / r["target_ratio"], f"{r['ratio']:.2f}x"))
    if r := results.get("s3-io-4k"):
        out.append(("4 KiB S3 vs boto3+pika\n(≥ 0.8x)", r["ratio"] / r["target_ratio"], f"{r['ratio']:.2f}x"))
    if r := results.get("concurrency-io-10ms"):
        top = max(r["levels"], key=int)
        level = r["levels"][top]
        out.append((f"concurrency N={top}\n(≥ {level['target_speedup']:g}x)", level["speedup"] / level["target_speedup"],
                    f"{level['speedup']:.2f}x"))
    if r := results.get("memory-1gib-copy"):
        out.append(("1 GiB copy peak RSS\n(≤ 150 MB)", r["target_mb"] / r["peak_rss_mb"], f"{r['peak_rss_mb']:.0f} MB"))
    if r := results.get("drain-sigterm"):
        worst = r["beyond_remaining_worst_s"]
        # seconds to spare within the 1 s allowance, as a fraction: (1 + slack left) / 1
        out.append(("drain beyond remaining\n(≤ +1 s)", (2 * r["target_beyond_remaining_s"] - worst) / r["target_beyond_remaining_s"],
                    f"+{worst:.2f} s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="directory of result JSON files")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.png", help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot: matplotlib is not installed: pip install matplotlib")
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(args.results.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            sys.exit(f"plot: {path} is not JSON: {exc}")
        results[document.get("benchmark", path.stem)] = document
    found = bars(results)
    if not found:
        sys.exit(f"plot: no benchmark results in {args.results}")
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    labels = [label for label, _, _ in found]
    scores = [score for _, score, _ in found]
    colours = ["tab:green" if score >= 1 else "tab:red" for score in scores]
    positions = range(len(found))
    left.barh(positions, scores, color=colours)
    left.axvline(1.0, color="black", linestyle="--", linewidth=1, label="target")
    for y, (_, score, text) in zip(positions, found, strict=True):
        left.text(score + 0.03, y, text, va="center")
    left.set_yticks(list(positions), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, max(scores) * 1.25)
    left.set_xlabel("measured relative to target (≥ 1 meets it)")
    left.set_title("slingshot benchmarks vs targets")
    left.legend(loc="lower right")
    if r := results.get("concurrency-io-10ms"):
        levels = sorted(r["levels"], key=int)
        n = [int(level) for level in levels]
        right.plot(n, [r["levels"][level]["speedup"] for level in levels], "o-", label="measured speed-up")
        right.plot(n, n, ":", color="grey", label="ideal (N)")
        right.plot(n, [0.8 * x for x in n], "--", color="black", label="target (0.8 x N)")
        right.set_xscale("log", base=2)
        right.set_xticks(n, [str(x) for x in n])
        right.set_xlabel("SLINGSHOT_CONCURRENCY (N)")
        right.set_ylabel("rate / rate at N=1")
        right.set_title("10 ms I/O handler: speed-up")
        right.legend()
    else:
        right.axis("off")
    dates = sorted({str(r.get("date", ""))[:10] for r in results.values()} - {""})
    figure.suptitle(f"measured {', '.join(dates)} on a shared 2-core machine (medians)", fontsize=9)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(json.dumps({"plot": str(args.out), "results": sorted(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
