"""The demo end to end in a reduced mode (sklearn digits, a small MLP, few steps), and its CLI."""
import json
import os
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from ms_weightnorm import demo


def test_reduced_demo_writes_table_png_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data", "digits", "--steps", "25", "--seeds", "2", "--window", "5", "--depth", "3",
            "--width", "32", "--lr", "0.01", "--threshold", "2.0", "--init-batch", "128", "--out", str(out),
            "--no-progress"]
    assert demo.main(argv) == 0
    assert ms.get_context("mode") == ms.PYNATIVE_MODE  # the demo trains in GRAPH_MODE, then restores

    printed = capsys.readouterr().out
    table = (out / "results.md").read_text()
    for label in demo.SETUPS.values():
        assert f"| {label} |" in printed and f"| {label} |" in table
    assert "ms-weightnorm-demo --data digits --steps 25 --seeds 2 " in table  # the command that made it
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "results.json").read_text())
    runs = report["runs"]
    assert sorted((r["setup"], r["seed"]) for r in runs) == sorted(
        (s, seed) for s in demo.SETUPS for seed in (0, 1))
    by = {(r["setup"], r["seed"]): r for r in runs}
    for seed in (0, 1):
        # Same seed, same weights and batches: weight norm starts from the plain network's function.
        assert np.isclose(by["plain", seed]["losses"][0], by["wn", seed]["losses"][0], rtol=1e-5)
        assert all(len(r["losses"]) == 25 and np.isfinite(r["losses"]).all() for r in runs)
    assert by["plain", 0]["losses"][0] != by["plain", 1]["losses"][0]
    for r in runs:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["ms_per_step"] > 0
        # Threshold 2.0 is reached early by every set-up on digits: the column is filled in.
        assert r["steps_to_threshold"] is not None and 5 <= r["steps_to_threshold"] <= 25


def test_cnn_option_runs_with_data_init_and_mean_only_bn(tmp_path):
    out = tmp_path / "cnn"
    results, table = demo.run(demo.parse_args(
        ["--data", "digits", "--model", "cnn", "--steps", "3", "--seeds", "1", "--window", "2",
         "--setups", "wn_init,wn_mobn", "--init-batch", "64", "--out", str(out), "--no-progress"]))
    assert [r.setup for r in results] == ["wn_init", "wn_mobn"]
    assert all(np.isfinite(r.losses).all() and len(r.losses) == 3 for r in results)
    assert "weight norm + data init" in table and (out / "loss_curves.png").exists()


def test_summary_counts_unreached_runs_as_not_reached():
    cfg = demo.Config(steps=10, setups=("plain", "wn"), seeds=(0, 1, 2))
    runs = [demo.RunResult("plain", s, steps_to_threshold=v) for s, v in enumerate([8, None, None])]
    runs += [demo.RunResult("wn", s, steps_to_threshold=v) for s, v in enumerate([4, 6, 2])]
    rows = {r["setup"]: r for r in demo.summarize(cfg, runs)}
    assert rows["plain"]["steps_median"] is None
    assert rows["wn"]["steps_median"] == 4 and rows["wn"]["ratio_vs_plain"] is None
    assert "not reached (8, -, -)" in demo.format_table(cfg, list(rows.values()))


def test_help_documents_the_options():
    text = subprocess.run([sys.executable, "-m", "ms_weightnorm.demo", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for option in ("--data", "--model", "--steps", "--seeds", "--out", "--optimizer", "--threshold"):
        assert option in text


@pytest.mark.parametrize("argv", [[], ["--seeds", "1"], ["--seeds", "4"], ["--seeds", "3,1"], ["--seeds", "0,1"],
                                  ["--data", "digits", "--setups", "wn,bn", "--lr", "0.5", "--no-progress"]])
def test_the_recorded_command_reproduces_the_options(argv):
    cfg = demo.parse_args(argv)
    again = demo.parse_args(" ".join(demo._cli_args(cfg)).split() + ([] if cfg.progress else ["--no-progress"]))
    assert again == cfg


@pytest.mark.parametrize("argv", [["--seeds", "x"], ["--setups", "plain,nope"], ["--steps", "0"],
                                  ["--steps", "5", "--window", "10"]])
def test_bad_options_exit_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as err:
        demo.parse_args(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


def test_kernel_build_says_so_once_and_is_outside_the_demos_timing(tmp_path):
    """A fresh kernel cache: one line before the wait, none once cached; the demo's wall time
    and step times exclude the build."""
    env = dict(os.environ, MS_WEIGHTNORM_CACHE_DIR=str(tmp_path / "cache"), MS_WEIGHTNORM_BACKEND="auto")
    argv = ["-m", "ms_weightnorm.demo", "--data", "digits", "--steps", "3", "--seeds", "1", "--window", "2",
            "--depth", "2", "--width", "16", "--setups", "wn", "--no-progress", "--out", str(tmp_path / "out")]
    start = time.perf_counter()
    first = subprocess.run([sys.executable] + argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [ln for ln in first.stderr.splitlines() if "compiling the fused CPU kernels" in ln]
    assert lines == [f"ms_weightnorm: compiling the fused CPU kernels once, ~10 s (cached in {tmp_path / 'cache'})"]
    assert list((tmp_path / "cache").glob("weight_norm_kernel-*.so"))
    wall = json.loads((tmp_path / "out" / "results.json").read_text())["wall_seconds"]
    # The build (several seconds of g++) happened before the timed training started.
    assert wall < elapsed - 3.0, (wall, elapsed)
    again = subprocess.run([sys.executable] + argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "compiling the fused" not in again.stderr


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_demo_refuses_to_overwrite_files_git_tracks(tmp_path, capsys):
    repo = tmp_path / "clone"
    figures = repo / "docs" / "demo"
    figures.mkdir(parents=True)
    (figures / "results.md").write_text("committed\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "docs/demo/results.md")
    _git(repo, "commit", "-q", "-m", "figures")
    argv = ["--data", "digits", "--steps", "3", "--seeds", "1", "--window", "2", "--depth", "2", "--width", "16",
            "--setups", "plain", "--no-progress", "--out", str(figures)]
    assert demo.main(argv) == 1
    err = capsys.readouterr().err
    assert f"holds files that git tracks ({figures / 'results.md'})" in err
    assert "Pick another --out (the default is ms_weightnorm_demo), or add --overwrite-tracked" in err
    assert (figures / "results.md").read_text() == "committed\n"
    assert sorted(p.name for p in figures.iterdir()) == ["results.md"]  # nothing else written either
    # An untracked output folder inside the same clone is fine, and so is an explicit overwrite.
    assert demo.main(argv[:-1] + [str(repo / "scratch")]) == 0
    assert demo.main(argv + ["--overwrite-tracked"]) == 0
    assert (figures / "results.md").read_text().startswith("# Weight norm demo: results")
    assert "--overwrite-tracked" not in (figures / "results.md").read_text()  # not part of the recorded run
