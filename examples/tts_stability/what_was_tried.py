#!/usr/bin/env python3
"""Reruns the "What was tried" table of README.md: each variant (a configuration plus investigation
flags) against the default baseline, default settings otherwise (10 seeds, 600 steps).

usage: what_was_tried.py [PATH/TO/tts_stability]   (default: ./tts_stability)
"""
import os
import subprocess
import sys
import tempfile

# (label, configuration, flags)
VARIANTS = [
    ("stable (the original values)", "stable", []),
    ("stable, `--spike-mode skip`", "stable", ["--spike-mode", "skip"]),
    ("stable, `--spike-mode skip --huber-delta 0.1`", "stable", ["--spike-mode", "skip", "--huber-delta", "0.1"]),
    ("stable, `--spike-mode skip --huber-delta 0.2`", "stable", ["--spike-mode", "skip", "--huber-delta", "0.2"]),
    ("stable, `--spike-mode skip --huber-delta 0.3`", "stable", ["--spike-mode", "skip", "--huber-delta", "0.3"]),
    ("stable, `--spike-mode skip --huber-delta 0.5`", "stable", ["--spike-mode", "skip", "--huber-delta", "0.5"]),
    ("the same with `--weight-rule dwa`", "stable",
     ["--spike-mode", "skip", "--huber-delta", "0.5", "--weight-rule", "dwa"]),
    ("stable - huber_mel, `--spike-mode skip`", "stable - huber_mel", ["--spike-mode", "skip"]),
    ("baseline, `--corrupt 0` (no corrupted batch at all)", "baseline", ["--corrupt", "0"]),
    ("baseline, `--lr 0.04`", "baseline", ["--lr", "0.04"]),
    ("stable, `--lr 0.04`", "stable", ["--lr", "0.04"]),
    ("stable, `--lr 0.08`", "stable", ["--lr", "0.08"]),
    ("baseline, `--lr 0.08`", "baseline", ["--lr", "0.08"]),
]


def means(binary, config, flags, out):
    """Mean final error, steps to target (600 for runs that never get there), held-out variability."""
    subprocess.run([binary, "--configs", config, *flags, "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [line.rstrip("\n").split(",") for line in open(os.path.join(out, "runs.csv"))]
    col = {name: i for i, name in enumerate(lines[0])}
    rows = [r for r in lines[1:] if r[col["config"]] == config]
    n = len(rows)
    final = sum(float(r[col["final_heldout_mel_l1"]]) for r in rows) / n
    steps = sum(float(r[col["steps_to_target"]]) if float(r[col["steps_to_target"]]) >= 0 else 600.0
                for r in rows) / n
    reached = sum(float(r[col["steps_to_target"]]) >= 0 for r in rows)
    variability = sum(float(r[col["heldout_variability"]]) for r in rows) / n
    return final, steps, reached, n, variability


def change(value, reference):
    return f"{100.0 * (value / reference - 1.0):+.0f}%"


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./tts_stability")
    with tempfile.TemporaryDirectory() as out:
        base = means(binary, "baseline", [], out)
        print(f"baseline: {base[1]:.0f} steps, held-out variability {base[4]:.3f}, final error {base[0]:.4f}\n")
        print("| configuration and flags | steps to 0.1 | held-out variability | final held-out mel L1 |")
        print("|---|---|---|---|")
        for label, config, flags in VARIANTS:
            final, steps, reached, n, variability = means(binary, config, flags, out)
            runs = "" if reached == n else f", {reached} of {n} runs reach it"
            print(f"| {label} | {steps:.0f} ({change(steps, base[1])}{runs}) | {variability:.3f} "
                  f"({change(variability, base[4])}) | {final:.4f} ({change(final, base[0])}) |")

        # Adam's second-moment memory: what Huber (delta 0.5, spikes skipped) costs against L1
        # at each beta2, both sides run with that beta2.
        print("\n| Adam beta2 | baseline + huber_mel vs baseline: steps to 0.1 | final held-out mel L1 |")
        print("|---|---|---|")
        for beta2 in ["0.999", "0.99", "0.9"]:
            flags = ["--huber-delta", "0.5", "--spike-mode", "skip", "--adam-beta2", beta2]
            l1 = means(binary, "baseline", flags, out)
            huber = means(binary, "baseline + huber_mel", flags, out)
            print(f"| {beta2} | {change(huber[1], l1[1])} | {change(huber[0], l1[0])} |")


if __name__ == "__main__":
    main()
