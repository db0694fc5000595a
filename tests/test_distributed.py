"""Data-parallel training and data-dependent init across processes, launched with msrun.

The two-process runs use loopback only (127.0.0.1, a free port), are bounded in time, and
leave no process and no listening port behind. A failed rank fails the test with the
rank's log in the message.

The single-process references run in this process, in GRAPH_MODE, on the concatenation of
the ranks' shards (the global batch), from the same seeds.
"""
from __future__ import annotations

import doctest
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
import pytest

from ms_weightnorm import distributed

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_data_parallel.py"

WORKERS = 2
RUN_TIMEOUT = 150.0  # seconds for a whole msrun job; a healthy one takes ~20 s here
CLUSTER_TIME_OUT = 60  # msrun's own limit on building the cluster
FAILURE_GRACE = 5.0  # after msrun reports a failed worker, time left for it to wind down
TAG_VAR = "MSWN_TEST_RUN_TAG"  # marks every process of one run, so we clean up exactly those

# Several steps of momentum SGD, with a global batch that the two ranks split in halves.
CFG_KW = dict(steps=8, batch_size=16, seed=7, lr=0.05, momentum=0.9, mode="graph")


def _load_example():
    spec = importlib.util.spec_from_file_location("train_data_parallel", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


example = _load_example()


# --------------------------------------------------------------------------- msrun harness


class MsrunError(AssertionError):
    """An msrun job failed or timed out; the message holds the logs of its ranks."""


@dataclass
class MsrunResult:
    out_dir: Path
    log_dir: Path
    seconds: float
    port: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _msrun_executable() -> str:
    # The msrun of the interpreter running the tests, not whichever is first on PATH.
    candidate = Path(sys.executable).with_name("msrun")
    if candidate.exists():
        return str(candidate)
    raise MsrunError(f"msrun not found next to {sys.executable}; install mindspore in this environment")


def _python_shim(folder: Path) -> Path:
    """A folder with a ``python`` that runs this interpreter.

    msrun starts every process as ``python script.py ...`` found on PATH. A shell shim
    (not a symlink) keeps a virtual environment active: Python finds its venv from the
    path of the executable it was started as.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return folder


def tagged_pids(tag: str) -> List[int]:
    """Live processes whose environment carries ``TAG_VAR=tag``: msrun, its scheduler, its workers.

    Workers run in sessions of their own (msrun starts them with setsid), so killing msrun's
    process group would miss them; the inherited environment variable finds them all.
    """
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's process
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def _identity(pid: int) -> Optional[Tuple[int, str]]:
    """``(pid, start time)`` of a process that has not finished exiting, else None.

    A killed process drops its memory (so its environ reads empty) before it closes its
    files and sockets; it is done only once it is gone or a zombie. The start time tells a
    reused pid apart.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return pid, fields[19]


def _kill_tagged(tag: str, known: Iterable[Tuple[int, str]] = (), deadline: float = 10.0) -> List[int]:
    """SIGKILL every process of the run by pid and wait (bounded) until all have exited.

    ``known`` are processes seen earlier that may be exiting already. Returns the pids still
    alive at the deadline (none, normally).
    """
    seen = set(known)
    end = time.monotonic() + deadline
    while True:
        current = {ident for ident in map(_identity, tagged_pids(tag)) if ident is not None}
        seen |= current
        alive = [ident for ident in seen if _identity(ident[0]) == ident]
        if not alive or time.monotonic() > end:
            return [pid for pid, _ in alive]
        for pid, _ in current:  # only processes that still carry the tag get a signal
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def listening_on(port: int) -> bool:
    """Whether any socket on this machine listens on TCP ``port`` (IPv4 or IPv6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _log_excerpt(path: Path, lines: int = 60) -> str:
    """The end of a MindSpore log without its WARNING/INFO chatter: tracebacks and errors."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as err:
        return f"(cannot read {path}: {err})"
    kept = [ln for ln in text if not ln.startswith(("[WARNING]", "[INFO]", "[DEBUG]"))]
    return "\n".join(kept[-lines:]) or "(only WARNING/INFO lines)"


def _failure_message(headline: str, log_dir: Path, launcher_log: Path) -> str:
    workers = sorted(log_dir.glob("worker_*.log"))
    # The rank(s) that raised come first: that is the log the reader needs.
    failed = [p for p in workers if "Traceback" in p.read_text(errors="replace")]
    ordered = failed + [p for p in workers if p not in failed]
    parts = [headline]
    if failed:
        parts.append("failed rank log(s): " + ", ".join(p.name for p in failed))
    for p in ordered:
        parts.append(f"===== {p.name} =====\n{_log_excerpt(p)}")
    parts.append(f"===== scheduler.log =====\n{_log_excerpt(log_dir / 'scheduler.log', 20)}")
    # msrun echoes the worker logs; its own verdict is in its [ERROR] lines.
    try:
        launcher = launcher_log.read_text(errors="replace").splitlines()
    except OSError:
        launcher = []
    verdict = [ln for ln in launcher if ln.startswith("[ERROR]")] or launcher[-10:]
    parts.append("===== msrun =====\n" + "\n".join(verdict))
    return "\n".join(parts)


def run_msrun(script: Path, args: Sequence[str], work: Path, timeout: float = RUN_TIMEOUT) -> MsrunResult:
    """Run ``script`` on ``WORKERS`` local processes with msrun on 127.0.0.1; raise MsrunError on failure.

    Bounded by ``timeout``; every process of the job is gone and the port is free on return,
    whatever happened.
    """
    work.mkdir(parents=True, exist_ok=True)
    log_dir, out_dir = work / "logs", work / "out"
    launcher_log = work / "msrun.log"
    port = free_port()
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MS_ROLE", "MS_SCHED", "MS_WORKER", "MS_NODE", "RANK_"))}
    env["PATH"] = f"{_python_shim(work / 'bin')}{os.pathsep}{env.get('PATH', '')}"
    env[TAG_VAR] = tag
    cmd = [_msrun_executable(), f"--worker_num={WORKERS}", f"--local_worker_num={WORKERS}",
           "--master_addr=127.0.0.1", f"--master_port={port}", f"--log_dir={log_dir}", "--join=True",
           f"--cluster_time_out={CLUSTER_TIME_OUT}", str(script), *args, "--out", str(out_dir)]
    start = time.monotonic()
    headline: Optional[str] = None
    with open(launcher_log, "w") as log:
        # cwd=work: MindSpore writes its graph dumps (rank_*/) into the current folder.
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        failed_at: Optional[float] = None
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now - start > timeout:
                    headline = f"msrun did not finish within {timeout:.0f} s; killed"
                    break
                # msrun kills the other workers at once when one fails, but then waits for its
                # scheduler to time the dead rank out (~30-45 s): no need to wait for that.
                if failed_at is None and "exit with exception" in launcher_log.read_text(errors="replace"):
                    failed_at = now
                if failed_at is not None and now - failed_at > FAILURE_GRACE:
                    break
                time.sleep(0.25)
        finally:
            before = [ident for ident in map(_identity, tagged_pids(tag)) if ident is not None]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # msrun and its scheduler
            proc.wait(timeout=10)
            survivors = _kill_tagged(tag, before)  # the workers, in their own sessions
            # A killed process closes its sockets only after its memory is torn down, which
            # for a MindSpore process on a loaded machine can outlast the moment it stops
            # being visible as a tagged process (seen once on 2.9.0 under load): wait for
            # the port, bounded, so that "free on return" holds.
            port_deadline = time.monotonic() + 15
            while listening_on(port) and time.monotonic() < port_deadline:
                time.sleep(0.1)
    seconds = time.monotonic() - start
    if survivors:
        raise MsrunError(f"processes {survivors} of the msrun job survived SIGKILL")
    if listening_on(port):
        raise MsrunError(f"port {port} still listening 15 s after the msrun job was killed")
    if headline is None and failed_at is not None:
        headline = f"msrun reported a failed worker; job stopped after {seconds:.1f} s"
    elif headline is None and proc.returncode != 0:
        headline = f"msrun failed (exit code {proc.returncode}) after {seconds:.1f} s"
    if headline is not None:
        raise MsrunError(_failure_message(f"{headline}: {' '.join(cmd)}", log_dir, launcher_log))
    return MsrunResult(out_dir, log_dir, seconds, port)


def processes_mentioning(text: str) -> List[int]:
    """Live processes whose command line contains ``text`` (checked independently of the tag)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _assert_cleaned_up(result: MsrunResult) -> None:
    left = processes_mentioning(str(result.out_dir))
    assert not left, f"processes {left} of the run are still alive"
    # The port is checked for listeners only: connections in TIME_WAIT are the kernel's.
    assert not listening_on(result.port), f"something still listens on port {result.port} after the run"


# --------------------------------------------------------------------------- references


@pytest.fixture(scope="module")
def graph_mode() -> Iterator[None]:
    """GRAPH_MODE for the single-process references, PyNative again afterwards."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def _rank_files(out: Path, stage: str) -> List[Dict[str, np.ndarray]]:
    files = [out / f"rank{r}_{stage}.npz" for r in range(WORKERS)]
    missing = [str(f) for f in files if not f.exists()]
    assert not missing, f"ranks did not write {missing}"
    return [dict(np.load(f)) for f in files]


def _assert_ranks_identical(ranks: List[Dict[str, np.ndarray]], stage: str) -> None:
    names = sorted(ranks[0])
    for r, params in enumerate(ranks[1:], start=1):
        assert sorted(params) == names, f"rank {r} has Parameters {sorted(params)}, rank 0 {names}"
        for k in names:
            np.testing.assert_array_equal(params[k], ranks[0][k], err_msg=f"{stage}: {k}, rank {r} vs rank 0")


def _assert_matches_reference(got: Dict[str, np.ndarray], ref: Dict[str, np.ndarray], stage: str) -> None:
    assert sorted(got) == sorted(ref), f"{stage}: Parameters {sorted(got)} vs reference {sorted(ref)}"
    for k in sorted(ref):
        # rtol 1e-5 elementwise; an atol of 1e-5 of the tensor's scale keeps entries that are
        # ~0 (where the relative error of float32 sums in another order is meaningless) in check.
        atol = 1e-5 * float(np.abs(ref[k]).max())
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=atol,
                                   err_msg=f"{stage}: {k}, data parallel vs single process")


# --------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> MsrunResult:
    cfg = example.Config(**CFG_KW)
    result = run_msrun(EXAMPLE, cfg.to_argv(), tmp_path_factory.mktemp("dp_plain"))
    return result


@pytest.fixture(scope="module")
def data_init_run(tmp_path_factory) -> MsrunResult:
    cfg = example.Config(**CFG_KW, data_init=True)
    return run_msrun(EXAMPLE, cfg.to_argv(), tmp_path_factory.mktemp("dp_data_init"))


# --------------------------------------------------------------------------- tests


def test_example_helpers_and_cli_round_trip():
    """Shards in rank order concatenate to the global batch; uneven splits are refused."""
    assert doctest.testmod(example).failed == 0
    batch = np.arange(24).reshape(12, 2)
    np.testing.assert_array_equal(
        np.concatenate([example.shard(batch, r, 3) for r in range(3)]), batch)
    with pytest.raises(ValueError, match="equal shards"):
        example.shard(batch, 0, 5)
    cfg = example.Config(**CFG_KW, data_init=True, init_scale=0.5, hidden=12)
    assert example.parse_args(cfg.to_argv())[0] == cfg


def test_without_communication_helpers_are_the_identity(monkeypatch):
    """msrun exports RANK_SIZE before init(); until init() runs, nothing is reduced."""
    monkeypatch.setenv("RANK_SIZE", str(WORKERS))
    assert not distributed.is_initialized()
    assert distributed.world_size() == 1
    assert distributed.rank() == 0
    for dtype in (ms.float32, ms.float16, ms.bfloat16, ms.float64, ms.int32, ms.int64):
        x = ms.Tensor(np.arange(6).reshape(2, 3)).astype(dtype)
        y = distributed.all_reduce_sum(x)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_array_equal(y.astype(ms.float64).asnumpy(), np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="Tensor"):
        distributed.all_reduce_sum(np.ones(3, np.float32))


def test_two_process_training_matches_single_process(plain_run, graph_mode):
    """Both ranks end with identical g, v and bias, equal to one process on the global batch."""
    _assert_cleaned_up(plain_run)
    cfg = example.Config(**CFG_KW)
    init_ranks = _rank_files(plain_run.out_dir, "init")
    final_ranks = _rank_files(plain_run.out_dir, "final")
    _assert_ranks_identical(init_ranks, "init")
    _assert_ranks_identical(final_ranks, "final")
    names = sorted(final_ranks[0])
    for suffix in ("weight_g", "weight_v", "bias"):
        assert sum(n.endswith(suffix) for n in names) == 3, names

    _, ref_init, ref_final = example.train(cfg, rank=0, world=1)
    _assert_matches_reference(init_ranks[0], ref_init, "init")
    _assert_matches_reference(final_ranks[0], ref_final, "final")
    for k in names:
        # Training moved every Parameter, so the match above is about the steps, not the init.
        assert not np.allclose(final_ranks[0][k], init_ranks[0][k]), f"{k} did not change"

    # Each rank trained on its own half: different shard losses whose mean is the global loss.
    losses = [np.load(plain_run.out_dir / f"rank{r}_losses.npy") for r in range(WORKERS)]
    assert not np.allclose(losses[0], losses[1])
    x, y = example.make_data(cfg)
    first_global = float(np.mean((ref_forward(cfg, ref_init, x[0]) - y[0]) ** 2))
    np.testing.assert_allclose((losses[0][0] + losses[1][0]) / 2, first_global, rtol=1e-5)


def ref_forward(cfg, params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP in NumPy from g, v and bias: w = g v / ||v|| per output row, ReLU between layers."""
    h = x.astype(np.float64)
    for i, layer in enumerate((0, 2, 4)):
        g, v, b = (params[f"{layer}.{n}"].astype(np.float64) for n in ("weight_g", "weight_v", "bias"))
        w = g * v / np.linalg.norm(v, axis=1, keepdims=True)
        h = h @ w.T + b
        if i < 2:
            h = np.maximum(h, 0.0)
    return h


def test_rank0_checkpoint_loads_into_single_process_net(plain_run, graph_mode):
    """final.ckpt, written by rank 0 only, restores the trained net in one process."""
    out = plain_run.out_dir
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["final.ckpt"]
    trained = _rank_files(out, "final")[0]
    cfg = example.Config(**{**CFG_KW, "seed": CFG_KW["seed"] + 1})  # a different starting point
    net = example.build_net(cfg)
    not_loaded, unexpected = ms.load_param_into_net(net, ms.load_checkpoint(str(out / "final.ckpt")))
    assert not not_loaded and not unexpected, (not_loaded, unexpected)
    loaded = example.parameters(net)
    assert sorted(loaded) == sorted(trained)
    for k in trained:
        np.testing.assert_array_equal(loaded[k], trained[k], err_msg=k)
    x = np.random.default_rng(0).normal(size=(5, cfg.in_dim)).astype(np.float32)
    np.testing.assert_allclose(net(ms.Tensor(x)).asnumpy(), ref_forward(cfg, trained, x), rtol=1e-4, atol=1e-5)


def test_distributed_data_dependent_init_matches_global_batch(data_init_run, plain_run, graph_mode):
    """Each rank inits from its own shard; all end with the g and bias of an init on the global batch."""
    _assert_cleaned_up(data_init_run)
    cfg = example.Config(**CFG_KW, data_init=True)
    init_ranks = _rank_files(data_init_run.out_dir, "init")
    _assert_ranks_identical(init_ranks, "data init")
    _, ref_init, ref_final = example.train(cfg, rank=0, world=1)
    _assert_matches_reference(init_ranks[0], ref_init, "data init")

    # The init did something: g and bias differ from the plain init, v does not...
    plain = _rank_files(plain_run.out_dir, "init")[0]
    for k in init_ranks[0]:
        same = np.allclose(init_ranks[0][k], plain[k])
        assert same == k.endswith("weight_v"), k
    # ...and it is the global batch's: first-layer pre-activations standardized over it.
    x, _ = example.make_data(cfg)
    p = init_ranks[0]
    w = p["0.weight_g"] * p["0.weight_v"] / np.linalg.norm(p["0.weight_v"], axis=1, keepdims=True)
    pre = x[0].astype(np.float64) @ w.T + p["0.bias"]
    np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pre.std(0), cfg.init_scale, rtol=1e-4)
    # A rank's own half is not standardized: the statistics really were reduced.
    half = example.shard(x[0], 0, WORKERS).astype(np.float64) @ w.T + p["0.bias"]
    assert not np.allclose(half.std(0), cfg.init_scale, rtol=1e-2)

    final_ranks = _rank_files(data_init_run.out_dir, "final")
    _assert_ranks_identical(final_ranks, "final after data init")
    _assert_matches_reference(final_ranks[0], ref_final, "final after data init")


FAILING_SCRIPT = '''
import sys
import numpy as np
from mindspore import Tensor, ops
from mindspore.communication import get_rank, init

init()
if get_rank() == 1:
    raise RuntimeError("deliberate failure on rank 1")
# Rank 0 waits in a collective that rank 1 never joins, as a real job would.
ops.AllReduce()(Tensor(np.ones(2, np.float32)))
'''


def test_failed_rank_fails_with_its_log(tmp_path):
    """A rank that raises ends the job quickly, with that rank's traceback in the error."""
    script = tmp_path / "fail_rank1.py"
    script.write_text(FAILING_SCRIPT)
    start = time.monotonic()
    with pytest.raises(MsrunError) as info:
        run_msrun(script, [], tmp_path / "run")
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "failed rank log(s): worker_1.log" in message
    assert "RuntimeError: deliberate failure on rank 1" in message
    assert elapsed < 90, f"a failed rank took {elapsed:.0f} s to be reported"
    assert not processes_mentioning(str(script)), "processes of the failed job are still alive"
    port = int(message.split("--master_port=")[1].split()[0])
    assert not listening_on(port)


# --------------------------------------------------------------------------- collectives, every dtype

COLLECTIVE_SCRIPT = '''
import sys
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore.communication import init

from ms_weightnorm import distributed

sys.path.insert(0, sys.argv[1])
from collective_values import DTYPES, rank_value

ms.set_context(device_target="CPU")
init()
out = Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
rank, world = distributed.rank(), distributed.world_size()
saved = {"rank": np.array(rank), "world": np.array(world)}
for mode_name, mode in (("pynative", ms.PYNATIVE_MODE), ("graph", ms.GRAPH_MODE)):
    ms.set_context(mode=mode)
    for name, shape in DTYPES:
        dtype = getattr(ms, name)
        x = ms.Tensor(rank_value(name, shape, rank)).astype(dtype)
        y = distributed.all_reduce_sum(x)
        assert y.dtype == dtype, (name, y.dtype)
        wide = y.astype(ms.float32) if name in ("float16", "bfloat16") else y
        saved[f"{mode_name}-{name}-{len(shape)}d"] = wide.asnumpy()
np.savez(out / f"rank{rank}_collectives.npz", **saved)
'''

COLLECTIVE_VALUES = '''
import numpy as np

# (dtype name, shape): every dtype all_reduce_sum accepts, and a 0-d float64.
DTYPES = [("float32", (2, 3)), ("float16", (2, 3)), ("bfloat16", (2, 3)), ("float64", (2, 3)),
          ("int32", (2, 3)), ("int64", (2, 3)), ("float64", ())]


def rank_value(name, shape, rank):
    """Values that differ per rank; their sum is exact in the dtype (so a reference is exact)."""
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if name == "float64":
        # Digits below float32's precision: a float32 detour would lose them.
        return (1.0 + base) * (1 + rank * 1e-12) + rank * 0.25
    if name == "int64":
        return base + 3_000_000_000 * (rank + 1)  # beyond int32
    if name == "int32":
        return (base + 1) * (1000 * rank + 7) - rank
    # float32/float16/bfloat16: small integers and halves, exact in bfloat16's 8 bits.
    return ((base + 1) * (rank + 1) + 0.5 * rank).astype(np.float32)
'''


def test_all_reduce_sum_two_processes_every_dtype(tmp_path):
    """Two ranks with different values: every dtype gets the exact sum on both ranks, both modes."""
    (tmp_path / "collective_values.py").write_text(COLLECTIVE_VALUES)
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVE_SCRIPT)
    result = run_msrun(script, [str(tmp_path)], tmp_path / "run")
    _assert_cleaned_up(result)
    spec = importlib.util.spec_from_file_location("collective_values", tmp_path / "collective_values.py")
    values = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(values)
    ranks = [dict(np.load(result.out_dir / f"rank{r}_collectives.npz")) for r in range(WORKERS)]
    assert [int(r["rank"]) for r in ranks] == list(range(WORKERS))
    assert all(int(r["world"]) == WORKERS for r in ranks)
    for mode_name in ("pynative", "graph"):
        for name, shape in values.DTYPES:
            key = f"{mode_name}-{name}-{len(shape)}d"
            parts = [values.rank_value(name, shape, r) for r in range(WORKERS)]
            expected = sum(p.astype(np.int64 if name.startswith("int") else np.float64) for p in parts)
            assert not np.array_equal(expected, parts[0]), key  # rank 0's value alone is wrong
            for r, got in enumerate(ranks):
                assert got[key].shape == tuple(shape), key
                if name == "float64":
                    assert got[key].dtype == np.float64
                    np.testing.assert_allclose(got[key], expected, rtol=1e-15, atol=0, err_msg=f"{key} rank {r}")
                else:
                    np.testing.assert_array_equal(got[key], expected, err_msg=f"{key} rank {r}")
