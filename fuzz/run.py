"""Run every fuzz target for a while and print executions, coverage and findings.

    python fuzz/run.py [--seconds N] [--fuzzers zip,pickle,safetensors] [--findings DIR]

Seeds are regenerated from real torch.save / safetensors outputs (``make_seeds.py``) into a
scratch corpus per target, each target runs for ``--seconds`` under libFuzzer's time and
memory limits, and a summary line per target gives the executions, the coverage (libFuzzer's
``cov``: code edges reached; ``ft``: features), the corpus size, and the findings: each crash,
timeout or out-of-memory input saved under ``--findings`` (default ``fuzz/findings``). The
exit status is 1 if anything was found. Every finding is meant to become a regression test
(``tests/test_fuzz.py`` replays the inputs kept in it).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("zip", "pickle", "safetensors")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=300, help="time per target (default 300)")
    parser.add_argument("--fuzzers", default=",".join(TARGETS), help="comma-separated: zip, pickle, safetensors")
    parser.add_argument("--findings", default=os.path.join(HERE, "findings"))
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=1536, help="memory one input may take (default 1536)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="ms-weightnorm-fuzz-")
    try:
        seeds = os.path.join(scratch, "seeds")
        subprocess.run([sys.executable, os.path.join(HERE, "make_seeds.py"), seeds], check=True)
        os.makedirs(args.findings, exist_ok=True)
        rows, total_found = [], 0
        for target in args.fuzzers.split(","):
            corpus = os.path.join(scratch, f"corpus-{target}")
            shutil.copytree(os.path.join(seeds, target), corpus)
            n_seeds = len(os.listdir(corpus))
            before = set(glob.glob(os.path.join(args.findings, f"{target}-*")))
            start = time.time()
            done = subprocess.run(
                [sys.executable, os.path.join(HERE, "targets.py"), target, f"-max_total_time={args.seconds}",
                 f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}", "-print_final_stats=1",
                 f"-artifact_prefix={os.path.join(args.findings, target)}-", corpus],
                capture_output=True, text=True)
            log = done.stderr
            with open(os.path.join(scratch, f"{target}.log"), "w") as f:
                f.write(log)
            stats = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", log, re.M)
            runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
            execs = int(runs.group(1)) if runs else (int(stats[-1][0]) if stats else 0)
            cov, ft, corp = stats[-1][1:] if stats else ("?", "?", "?")
            found = sorted(set(glob.glob(os.path.join(args.findings, f"{target}-*"))) - before)
            total_found += len(found)
            rows.append((target, execs, cov, ft, f"{n_seeds} -> {corp}", len(found), time.time() - start))
            if found or done.returncode not in (0,):
                print(f"fuzz: {target} exited {done.returncode}; last lines of its log:", file=sys.stderr)
                print("\n".join(log.strip().splitlines()[-25:]), file=sys.stderr)
                for path in found:
                    print(f"fuzz: finding {path}", file=sys.stderr)
        print(f"{'target':<12} {'executions':>11} {'cov':>6} {'ft':>7} {'corpus':>12} {'findings':>9} {'seconds':>8}")
        for target, execs, cov, ft, corp, found, secs in rows:
            print(f"{target:<12} {execs:>11} {cov:>6} {ft:>7} {corp:>12} {found:>9} {secs:>8.0f}")
        print(f"fuzz: {total_found} finding(s)" + (f", saved in {args.findings}" if total_found else ""))
        return 1 if total_found else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
