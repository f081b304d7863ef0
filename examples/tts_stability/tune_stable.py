#!/usr/bin/env python3
"""The tuning runs that chose presets::stable (v2): every candidate, on the TUNING seeds 100-109
(the study reports on seeds 0-9), at three corruption rates, against the baseline and the oracle.

Rule (the issue's goals, applied to the tuning seeds): keep a candidate only if, at every rate,
its mean final held-out error is no worse than the oracle's, and, at every rate with corrupted
batches, its held-out variability is at most half the baseline's; among those, take the fewest
mean steps to the target over the three rates; a difference under 2% counts as a tie, broken by
the lower mean final error and then by the simpler configuration (fewer remedies on).

usage: tune_stable.py [PATH/TO/tts_stability] [--seeds N]   (default ./tts_stability, 10 seeds)
Prints a markdown table (examples/tts_stability/README.md, "How stable v2 was chosen").
"""
import os
import subprocess
import sys
import tempfile

SCENARIOS = ["p0", "p0.05", "p0.2"]
FIRST_SEED = 100
# Every candidate as --set fields of the stable preset; the chosen one is the preset itself.
BASE = "mel=adaptive_huber,mel_weight=45,stop_pos_weight=1,label_smoothing=0,spike_detection=1,spikes=skip,scale_factor=0.9"
CANDIDATES = [
    ("AdaptiveHuber k 0.5", BASE + ",huber_k=0.5,adaptive_weights=0"),
    ("AdaptiveHuber k 1", BASE + ",huber_k=1,adaptive_weights=0"),
    ("AdaptiveHuber k 2", BASE + ",huber_k=2,adaptive_weights=0"),
    ("AdaptiveHuber k 3.88 (Huber's 1.345 sigma)", BASE + ",huber_k=3.88,adaptive_weights=0"),
    ("AdaptiveHuber k 8", BASE + ",huber_k=8,adaptive_weights=0"),
    ("k 1, scale history 0.5", BASE + ",huber_k=1,adaptive_weights=0,scale_factor=0.5"),
    ("k 1, scale history 0.99", BASE + ",huber_k=1,adaptive_weights=0,scale_factor=0.99"),
    ("k 1, spikes dampened", BASE + ",huber_k=1,adaptive_weights=0,spikes=dampen"),
    ("k 1, adaptive weights (chosen)", BASE + ",huber_k=1,adaptive_weights=1"),
    ("k 1, adaptive weights, pos_weight 5", BASE + ",huber_k=1,adaptive_weights=1,stop_pos_weight=5"),
    ("k 1, adaptive weights, label smoothing 0.05", BASE + ",huber_k=1,adaptive_weights=1,label_smoothing=0.05"),
    ("k 1, adaptive weights, mel weight 35", BASE + ",huber_k=1,adaptive_weights=1,mel_weight=35"),
    ("fixed Huber delta 1, skip", BASE + ",mel=huber,huber_delta=1,adaptive_weights=0"),
    ("fixed Huber delta 0.1, skip", BASE + ",mel=huber,huber_delta=0.1,adaptive_weights=0"),
    ("L1, skip (baseline + spike handling)", BASE + ",mel=l1,adaptive_weights=0"),
]


def run(binary, config, flags, out, seeds):
    subprocess.run([binary, "--configs", config, "--scenarios", ",".join(SCENARIOS), "--first-seed", str(FIRST_SEED),
                    "--seeds", str(seeds), *flags, "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [line.rstrip("\n").split(",") for line in open(os.path.join(out, "runs.csv"))]
    col = {name: i for i, name in enumerate(lines[0])}
    result = {}
    for scenario in SCENARIOS:
        rows = [r for r in lines[1:] if r[col["config"]] == config and r[col["scenario"]] == scenario]
        steps = [float(r[col["steps_to_target"]]) for r in rows]
        finals = [float(r[col["final_heldout_mel_l1"]]) for r in rows]
        budget = 600.0
        variability = [float(r[col["heldout_variability"]]) for r in rows]
        result[scenario] = (sum(s if s >= 0 else budget for s in steps) / len(rows), sum(finals) / len(rows),
                            sum(variability) / len(rows))
    return result


def main():
    args = sys.argv[1:]
    seeds = 10
    if "--seeds" in args:
        i = args.index("--seeds")
        seeds = int(args[i + 1])
        del args[i:i + 2]
    binary = os.path.abspath(args[0] if args else "./tts_stability")
    with tempfile.TemporaryDirectory() as out:
        base = run(binary, "baseline", [], out, seeds)
        oracle = run(binary, "oracle", [], out, seeds)
        header = " | ".join(f"{s}: steps, final, variability" for s in SCENARIOS)
        print(f"| candidate | {header} | kept? |")
        print("|---|" + "---|" * len(SCENARIOS) + "---|")
        for name, ref in (("baseline", base), ("oracle", oracle)):
            cells = " | ".join(f"{ref[s][0]:.0f}, {ref[s][1]:.4f}, {ref[s][2]:.3f}" for s in SCENARIOS)
            print(f"| {name} | {cells} | reference |")
        for label, fields in CANDIDATES:
            r = run(binary, "stable", ["--set", fields], out, seeds)
            cells = []
            final_ok = jitter_ok = True
            for s in SCENARIOS:
                steps, final, variability = r[s]
                final_ok = final_ok and final <= oracle[s][1]
                if s != "p0":
                    jitter_ok = jitter_ok and variability <= 0.5 * base[s][2]
                cells.append(f"{steps:.0f} ({100 * (steps / oracle[s][0] - 1):+.0f}%), {final:.4f}, {variability:.3f}")
            mean_steps = sum(r[s][0] for s in SCENARIOS) / len(SCENARIOS)
            mean_final = sum(r[s][1] for s in SCENARIOS) / len(SCENARIOS)
            if not final_ok:
                verdict = "no: final error above the oracle's"
            elif not jitter_ok:
                verdict = "no: variability above half the baseline's"
            else:
                verdict = f"mean steps {mean_steps:.0f}, mean final {mean_final:.4f}"
            print(f"| {label} | {' | '.join(cells)} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
