"""Mutation testing of the core modules with mutmut 2, within a time budget.

``bash run.sh mutate [--budget-minutes N] [--modules a.py,b.py] [--workdir DIR]``

mutmut 2 edits the source in place, so everything runs in a scratch copy of the project
(``--workdir``, default a new temporary directory): the working tree is never touched. Each
module gets its own mutmut run with its own fast tests (see mutmut_config.MODULE_TESTS);
the budget is shared, time a module does not use passes to the next. When the budget runs
out, the running mutmut is stopped and the untested mutants are counted as such. The
result: killed/tested per module, the score, and every survivor with its diff.
Not part of CI: a full run takes about an hour on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mutmut_config import MODULE_TESTS, PKG, TARGETS, target_file  # noqa: E402

COPY = ("src", "tests", "tests_mindone", "examples", "tools", "fuzz", "pyproject.toml", "README.md")


def _mutmut() -> str:
    found = os.environ.get("MUTMUT") or shutil.which("mutmut", path=str(Path(sys.executable).parent))
    if not found:
        sys.exit("mutmut 2 not found next to this Python; install it with: pip install 'mutmut==2.5.1'")
    return found


def _prepare(work: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, work / name)
    shutil.copy2(HERE / "mutmut_config.py", work / "mutmut_config.py")


def _forget_baseline(work: Path) -> None:
    # mutmut 2 caches one baseline test time for the tests/ tree and derives every mutant's
    # timeout from it; each module runs other tests, so each measures its own baseline (else a
    # slower module's mutants time out and count as killed).
    db = work / ".mutmut-cache"
    if db.exists():
        con = sqlite3.connect(db)
        con.execute("DELETE FROM MiscData WHERE key = 'baseline_time_elapsed'")
        con.commit()
        con.close()


def _run_module(work: Path, module: str, seconds: float, env: dict) -> str:
    _forget_baseline(work)
    runner = f"{sys.executable} tools/mutation/runner.py {module}"
    env = dict(env, MUTATE_TARGET=module)  # a target (``assignment``) mutates part of its file only
    module = target_file(module)
    cmd = [_mutmut(), "run", "--paths-to-mutate", PKG + module, "--tests-dir", "tests",
           "--runner", runner, "--no-progress", "--simple-output"]
    log = open(work / f"mutmut-{module.replace('/', '_')}.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        proc.wait(timeout=max(seconds, 1))
        outcome = f"finished (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        # mutmut first, with no chance to record anything: the tests it is running would die
        # of the signal with a code that mutmut 2 files as "survived". Then its test process.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        outcome = "stopped by the time budget"
    finally:
        log.close()
    backup = work / (PKG + module + ".bak")
    if backup.exists():  # stopped mid-mutant: put the original back for the next module
        shutil.move(str(backup), str(work / (PKG + module)))
    return outcome


def _results(work: Path):
    db = work / ".mutmut-cache"
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT m.id, m.status, s.filename, l.line_number, l.line FROM Mutant m "
        "JOIN Line l ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id").fetchall()
    con.close()
    by_module: dict = {}
    for mid, status, filename, line_number, line in rows:
        # Keyed like MODULE_TESTS: the path under the package (``_checkpoint/unpickler.py``).
        name = filename.split(PKG, 1)[-1] if PKG in filename else Path(filename).name
        by_module.setdefault(name, []).append((mid, status, line_number + 1, line))
    return by_module


def _diff(work: Path, mid: int, env: dict) -> str:
    out = subprocess.run([_mutmut(), "show", str(mid)], cwd=work, env=env, capture_output=True, text=True)
    return "\n".join(l for l in out.stdout.splitlines() if l.startswith(("-", "+")) and
                     not l.startswith(("---", "+++")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--modules", default=",".join(MODULE_TESTS))
    parser.add_argument("--sample", type=float, default=1.0,
                        help="fraction of mutants to run, a deterministic sample over every line")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch copy to use (kept; reusing one resumes from its mutmut cache)")
    args = parser.parse_args(argv)
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {', '.join(MODULE_TESTS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ms_weightnorm-mutate-"))
    if not (work / "mutmut_config.py").exists():
        work.mkdir(parents=True, exist_ok=True)
        _prepare(work)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MUTATE_PYTHON"] = sys.executable
    env["MUTATE_SAMPLE"] = str(args.sample)
    print(f"mutation testing in {work} (budget {args.budget_minutes:g} min, sample {args.sample:g})",
          flush=True)

    deadline = time.monotonic() + 60 * args.budget_minutes
    for i, module in enumerate(modules):
        left = deadline - time.monotonic()
        share = left / (len(modules) - i)
        start = time.monotonic()
        outcome = _run_module(work, module, share, env)
        print(f"  {module}: {outcome} after {time.monotonic() - start:.0f} s", flush=True)

    results = _results(work)
    total_killed = total_tested = 0
    survivors = []
    print(f"\n{'module':32s}killed/tested  (timeout, suspicious, skipped: message or sampled out,"
          " untested: out of time)")
    for module in modules:
        rows = results.get(target_file(module), [])
        if module in TARGETS:  # the file's other lines were skipped for this target: count its own
            rows = [r for r in rows if r[1] != "skipped"]
        count = {s: sum(r[1] == s for r in rows) for s in
                 ("ok_killed", "ok_suspicious", "bad_timeout", "bad_survived", "skipped", "untested")}
        killed = count["ok_killed"] + count["ok_suspicious"] + count["bad_timeout"]
        tested = killed + count["bad_survived"]
        total_killed += killed
        total_tested += tested
        print(f"{module:32s}{killed:6d}/{tested:<6d}    ({count['bad_timeout']}, {count['ok_suspicious']}, "
              f"{count['skipped']}, {count['untested']})")
        survivors += [(module, *r) for r in rows if r[1] == "bad_survived"]
    score = 100.0 * total_killed / total_tested if total_tested else 0.0
    print(f"score: {total_killed}/{total_tested} killed ({score:.1f}%)")
    print(f"\nsurvivors ({len(survivors)}):")
    for module, mid, _, line_number, line in survivors:
        print(f"--- #{mid} {module}:{line_number}\n{_diff(work, mid, env)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
