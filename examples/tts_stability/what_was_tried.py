#!/usr/bin/env python3
"""Reruns the "What was tried" investigations of README.md with today's flags: each variant (a
configuration, the stable preset rewritten with --set, plus loop flags) against the baseline, at the
default scenario (p0.05), default settings otherwise (10 seeds, 600 steps).

The variants of the first study were changes of the original project's table; here that table is
written out as --set fields of the stable preset (ORIGINAL), so each variant is one --set away from
it. Spike detection is the calibrated detector now (docs/spike-calibration.md), not the 2.0x-mean
rule of that study, so the numbers differ from the ones first published.

usage: what_was_tried.py [PATH/TO/tts_stability]   (default: ./tts_stability)
"""
import os
import subprocess
import sys
import tempfile

# The original project's table and the baseline's, as --set fields of the stable preset.
ORIGINAL = ("mel=huber,huber_delta=1,mel_weight=35,stop_pos_weight=5,label_smoothing=0.05,stop_weight=1,"
            "adaptive_weights=1,weight_lo=0.7,weight_hi=1.3,smoothing=0.1,spike_detection=1,spikes=dampen,"
            "patience=25,min_delta=0.0005,validation_smoothing=0")
BASELINE = ("mel=l1,mel_weight=45,stop_pos_weight=1,label_smoothing=0,stop_weight=1,adaptive_weights=0,"
            "smoothing=0,spike_detection=0,patience=20,min_delta=0,validation_smoothing=0")
SCENARIO = "p0.05"

# (label, configuration, flags)
VARIANTS = [
    ("original", "original", []),
    ("original, spikes skipped", "stable", ["--set", ORIGINAL + ",spikes=skip"]),
    ("original, spikes skipped, Huber delta 0.1", "stable", ["--set", ORIGINAL + ",spikes=skip,huber_delta=0.1"]),
    ("original, spikes skipped, Huber delta 0.2", "stable", ["--set", ORIGINAL + ",spikes=skip,huber_delta=0.2"]),
    ("original, spikes skipped, Huber delta 0.3", "stable", ["--set", ORIGINAL + ",spikes=skip,huber_delta=0.3"]),
    ("original, spikes skipped, Huber delta 0.5", "stable", ["--set", ORIGINAL + ",spikes=skip,huber_delta=0.5"]),
    ("original, spikes skipped, L1 mel (weight 45)", "stable", ["--set", ORIGINAL + ",spikes=skip,mel=l1,mel_weight=45"]),
    ("oracle (no corrupted batch reaches the optimizer)", "oracle", []),
    ("baseline, `--lr 0.04`", "baseline", ["--lr", "0.04"]),
    ("stable, `--lr 0.04`", "stable", ["--lr", "0.04"]),
    ("stable, `--lr 0.08`", "stable", ["--lr", "0.08"]),
    ("baseline, `--lr 0.08`", "baseline", ["--lr", "0.08"]),
]


def means(binary, config, flags, out):
    """Mean final error, steps to target (600 for runs that never get there), held-out variability."""
    subprocess.run([binary, "--configs", config, "--scenarios", SCENARIO, *flags, "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [line.rstrip("\n").split(",") for line in open(os.path.join(out, "runs.csv"))]
    col = {name: i for i, name in enumerate(lines[0])}
    rows = [r for r in lines[1:] if r[col["config"]] == config and r[col["scenario"]] == SCENARIO]
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

        # Adam's second-moment memory: what a Huber mel term (delta 0.5, weight 35) costs against
        # the baseline's L1 at each beta2, both sides run with that beta2.
        print("\n| Adam beta2 | baseline with Huber (delta 0.5) vs baseline: steps to 0.1 | final held-out mel L1 |")
        print("|---|---|---|")
        for beta2 in ["0.999", "0.99", "0.9"]:
            l1 = means(binary, "baseline", ["--adam-beta2", beta2], out)
            huber = means(binary, "stable",
                          ["--set", BASELINE + ",mel=huber,huber_delta=0.5,mel_weight=35", "--adam-beta2", beta2], out)
            print(f"| {beta2} | {change(huber[1], l1[1])} | {change(huber[0], l1[0])} |")


if __name__ == "__main__":
    main()
