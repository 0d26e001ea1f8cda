"""Acquisition speed: select k of n pool items with every strategy, and compare with small-text.

    # ours only (the project venv has no small-text):
    .venv/bin/python benchmarks/acquisition_speed.py
    # only the issue-15 strategies, plus the word-budget table, no head-to-head:
    .venv/bin/python benchmarks/acquisition_speed.py --strategies least_confidence bald density_hybrid \
        --skip-full-head-to-head --small-k 0
    # side by side with small-text 1.4.1 (separate venv, no torch; see docs/acquisition.md):
    /tmp/bench-smalltext/bin/python benchmarks/acquisition_speed.py

Data: n sentence embeddings (dim 384) from a 50-component Gaussian mixture, L2-normalised like the
student's; ~25 words per sentence of 5-label softmax marginals; 50 labeled items from the same
mixture (the LLMaAA seed set). Coverage = distance from a pool item to its nearest selected item,
"max / mean / max with the labeled items counted as centers too" (lower is better).

small-text's `greedy_coreset` recomputes the distances to every selected item at each step (O(n·k²·d)),
so each small-text call runs in a spawned child stopped after `--smalltext-timeout` seconds; the
head-to-head is repeated with a smaller batch (`--small-k`, optionally on `--small-n` items) where it
finishes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path

# One thread per library unless the caller exports otherwise: on a shared 2-core machine, 2-thread
# BLAS/OpenMP runs slowed 5-10x whenever another process took a core (OpenMP barriers wait for the
# descheduled thread); single-threaded CPU time is the number that reproduces. Set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any venv that has numpy+sklearn

from acquisition import (  # noqa: E402
    CoresetSampling,
    HybridSampling,
    KMeansSampling,
    PoolData,
    QueryStrategy,
    get_strategy,
    min_sq_distances,
    select_within_budget,
)

try:
    from small_text.query_strategies.coresets import greedy_coreset
    from small_text.query_strategies.strategies import EmbeddingKMeans

    SMALL_TEXT: str | None = version("small-text")
except ImportError:
    SMALL_TEXT = None


def make_mc(marginals: list[np.ndarray], passes: int, seed: int) -> list[np.ndarray]:
    """`passes` noisy copies of each sentence's marginals, (passes, n_words, 5) float32: stand-ins for
    MC-dropout passes (log-probabilities plus N(0, 0.5²) noise per pass, renormalised)."""
    rng = np.random.default_rng(seed + 1)
    lengths = np.array([m.shape[0] for m in marginals])
    logp = np.log(np.concatenate(marginals))
    out = np.empty((passes, *logp.shape), dtype=np.float32)
    for t in range(passes):
        z = logp + 0.5 * rng.standard_normal(logp.shape, dtype=np.float32)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out[t] = z / z.sum(axis=1, keepdims=True)
    return np.split(out, np.cumsum(lengths)[:-1], axis=1)


def make_data(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = rng.uniform(0.01, 0.03, size=50).astype(np.float32)  # per-component std per dimension

    def draw(m: int) -> np.ndarray:
        comp = rng.integers(0, 50, size=m)
        x = centers[comp] + spread[comp, None] * rng.standard_normal((m, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    emb, labeled = draw(n), draw(50)
    lengths = np.clip(rng.poisson(25, size=n), 1, None)
    logits = rng.standard_normal((int(lengths.sum()), 5)).astype(np.float32) * 2.0
    logits[:, 0] += 2.0  # mostly "O", as a trained tagger would say
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    marginals = np.split(probs, np.cumsum(lengths)[:-1])
    return emb, labeled, marginals


def coverage(x: np.ndarray, selected: np.ndarray, labeled: np.ndarray) -> str:
    """"max / mean" distance from a pool item to its nearest selected item, then the max when the
    labeled items count as centers too (the k-center objective a labeled-seeded coreset minimises)."""
    d = min_sq_distances(x, x[selected])
    d_lab = np.sqrt(np.minimum(d, min_sq_distances(x, labeled)))
    d = np.sqrt(d)
    return f"{d.max():.3f} / {d.mean():.3f} / {d_lab.max():.3f}"


REPEAT = 2  # runs per strategy for ours (best kept); small-text's long calls run once


class Timing:
    """Wall and CPU seconds of one call (CPU = this process, all threads)."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu

    def __str__(self) -> str:
        return f"{self.wall:.2f} / {self.cpu:.2f}"


def timed(fn: Callable[[], np.ndarray], repeat: int = 1) -> tuple[Timing, np.ndarray]:
    """Best of `repeat` runs (the cores are shared, so a single wall time can include others' work)."""
    wall = cpu = np.inf
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return Timing(wall, cpu), np.asarray(out)


def smalltext_job(kind: str, emb: np.ndarray, labeled: np.ndarray, k: int) -> np.ndarray:
    """One small-text selection on raw arrays, through the lightest entry points it has."""
    if kind == "coreset":
        # Its indices: the pool first, then the labeled rows, all in one matrix (as its query() does).
        x = np.vstack([emb, labeled])
        return greedy_coreset(x, np.arange(emb.shape[0]), np.arange(emb.shape[0], x.shape[0]), k,
                              distance_metric="euclidean", normalized=True)
    np.random.seed(0)  # EmbeddingKMeans builds KMeans() without a random_state
    # sample() ignores clf, dataset and y.
    return EmbeddingKMeans(normalize=False).sample(None, None, np.arange(emb.shape[0]), np.array([], int),
                                                   None, k, emb)


def _child(
    conn: Connection, kind: str, data_args: tuple[int, int, int], subset: np.ndarray | None, k: int
) -> None:
    try:
        emb, labeled, _ = make_data(*data_args)  # rebuilt from the seed: nothing big to pickle
        if subset is not None:
            emb = emb[subset]
        smalltext_job(kind, emb[:300], labeled, 5)  # warm-up: lazy imports, thread pools
        conn.send("ready")
        timing, out = timed(lambda: smalltext_job(kind, emb, labeled, k))
        conn.send((timing, out))
    except Exception as exc:  # report, don't hang the parent
        conn.send(exc)
    conn.close()


def timed_with_cap(
    kind: str, data_args: tuple[int, int, int], subset: np.ndarray | None, k: int, timeout: float
) -> tuple[Timing, np.ndarray] | str:
    """Run a small-text job in a fresh (spawned) process and stop it after `timeout` seconds.

    Spawn, not fork: a forked child can hang in sklearn's OpenMP runtime once the parent has used it.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, kind, data_args, subset, k), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(300) or parent.recv() != "ready":
            return "error: the child process did not start"
        if not parent.poll(timeout):
            return f"> {timeout:.0f} s (stopped)"
        result = parent.recv()
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()
    if isinstance(result, Exception):
        return f"error: {result!r}"
    return result


def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


ALL_STRATEGIES = ("random", "entropy", "least_confidence", "mnlp", "kmeans", "coreset", "hybrid", "hybrid-kmeans++",
                  "weighted_hybrid", "bald", "density_hybrid")


def _strategy(name: str) -> QueryStrategy:
    return HybridSampling(diversity="kmeans++") if name == "hybrid-kmeans++" else get_strategy(name)


def ours_table(pool: PoolData, emb: np.ndarray, labeled: np.ndarray, k: int, names: Sequence[str]) -> list[str]:
    rows = [fmt_row(["strategy", "wall / CPU s", "coverage: max / mean / max incl. labeled"])]
    rows.append(fmt_row(["---"] * 3))
    print("\n".join(rows), flush=True)
    for name in names:
        s = _strategy(name)
        label = s.name if not isinstance(s, HybridSampling) else f"hybrid ({s.diversity}, beta={s.beta:g})"
        # A fresh pool view per run, so a strategy's memoised scores (BALD) are timed, not reused.
        secs, sel = timed(lambda s=s: s.select(fresh(pool), k, np.random.default_rng(0)), REPEAT)
        assert sel.shape == (k,) and np.unique(sel).size == k
        rows.append(fmt_row([label, str(secs), coverage(emb, sel, labeled)]))
        print(rows[-1], flush=True)
    return rows


def fresh(pool: PoolData) -> PoolData:
    """The same arrays without the pool's memo (validation is skipped: the arrays are already checked)."""
    copy = object.__new__(PoolData)
    copy.__dict__.update({k: v for k, v in pool.__dict__.items() if k != "_memo"})
    return copy


def budget_table(pool: PoolData, words: np.ndarray, k: int, names: Sequence[str]) -> list[str]:
    """Budgeted selection: a word budget of what k random items hold, filled greedily (acquisition.cost)."""
    budget = float(np.round(words.mean() * k))
    rows = [fmt_row(["strategy", f"wall / CPU s, budget {budget:,.0f} words", "items", "words used"]),
            fmt_row(["---"] * 4)]
    print("\n".join(rows), flush=True)
    for name in names:
        s = _strategy(name)
        secs, sel = timed(lambda s=s: select_within_budget(s, fresh(pool), budget, words, np.random.default_rng(0)),
                          REPEAT)
        assert words[sel].sum() <= budget
        rows.append(fmt_row([name, str(secs), f"{sel.size:,}", f"{words[sel].sum():,.0f}"]))
        print(rows[-1], flush=True)
    return rows


def head_to_head(
    emb: np.ndarray, labeled: np.ndarray, k: int, timeout: float, data_args: tuple[int, int, int],
    subset: np.ndarray | None,
) -> list[str]:
    n = emb.shape[0]
    pool = PoolData(ids=[str(i) for i in range(n)], embeddings=emb, labeled_embeddings=labeled)
    rows = []
    pairs: list[tuple[str, Callable[[], np.ndarray], str]] = [
        ("coreset", lambda: CoresetSampling().select(pool, k), "greedy_coreset"),
        ("kmeans", lambda: KMeansSampling().select(pool, k, np.random.default_rng(0)), "EmbeddingKMeans"),
    ]
    for name, ours_fn, theirs_name in pairs:
        t_ours, sel = timed(ours_fn, REPEAT)
        cov_ours = coverage(emb, sel, labeled)
        if SMALL_TEXT is None:
            theirs, ratio, cov_theirs = "not installed", "-", "-"
        else:
            res = timed_with_cap(name, data_args, subset, k, timeout)
            if isinstance(res, str):
                theirs, ratio, cov_theirs = res, f"> {timeout / t_ours.wall:.0f}x (wall)", "-"
            else:
                t_theirs, sel_theirs = res
                uniq = np.unique(sel_theirs).size
                cov_theirs = coverage(emb, sel_theirs, labeled)
                theirs = str(t_theirs) + ("" if uniq == k else f" ({uniq} unique of {k})")
                if np.array_equal(sel_theirs, sel):
                    theirs += " (same picks, same order)"
                ratio = f"{t_theirs.wall / t_ours.wall:.1f}x / {t_theirs.cpu / t_ours.cpu:.1f}x"
        rows.append(fmt_row([f"{name} n={n:,} k={k:,}", str(t_ours), theirs_name, theirs, ratio,
                             cov_ours, cov_theirs]))
        print(rows[-1], flush=True)
    return rows


def run_ours(pool: PoolData, emb: np.ndarray, labeled: np.ndarray, marginals: list[np.ndarray], k: int,
             names: Sequence[str], budget_names: Sequence[str]) -> None:
    # Warm-up on a small slice so first-call costs (lazy imports, thread pools) are not timed.
    mc = pool.mc_marginals[:300] if pool.mc_marginals is not None else None
    tiny = PoolData(ids=[str(i) for i in range(300)], marginals=marginals[:300], embeddings=emb[:300],
                    labeled_embeddings=labeled, mc_marginals=mc)
    for name in names:
        if mc is not None or not _strategy(name).needs_mc_marginals:
            _strategy(name).select(tiny, 5)
    print(f"## Ours: select k={k:,} of n={pool.n:,}\n", flush=True)
    ours_table(pool, emb, labeled, k, names)
    if budget_names:
        print(f"\n## Ours, within a word budget (what {k:,} random items hold), n={pool.n:,}\n", flush=True)
        words = np.array([m.shape[0] for m in marginals], dtype=np.float64)
        budget_table(pool, words, k, budget_names)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small-n", type=int, default=None,
                    help="subsample the pool for the second head-to-head (default: the same n items)")
    ap.add_argument("--small-k", type=int, default=100, help="batch size for the second head-to-head")
    ap.add_argument("--smalltext-timeout", type=float, default=120.0, help="seconds per small-text call")
    ap.add_argument("--skip-full-head-to-head", action="store_true")
    ap.add_argument("--skip-ours", action="store_true", help="only run the head-to-head")
    ap.add_argument("--repeat", type=int, default=2, help="time ours as the best of this many runs")
    ap.add_argument("--strategies", nargs="+", default=list(ALL_STRATEGIES), choices=ALL_STRATEGIES,
                    help="which of ours to time (default: all)")
    ap.add_argument("--budget-strategies", nargs="*", default=["random", "least_confidence", "bald",
                                                               "density_hybrid"], choices=ALL_STRATEGIES,
                    help="also time these within a word budget (acquisition.cost.select_within_budget)")
    ap.add_argument("--mc-passes", type=int, default=10, help="MC-dropout passes for BALD (0: no BALD)")
    args = ap.parse_args(argv)
    global REPEAT
    REPEAT = max(1, args.repeat)

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"small-text {SMALL_TEXT or 'not installed'}, OMP/BLAS threads {os.environ['OMP_NUM_THREADS']}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    emb, labeled, marginals = make_data(args.n, args.dim, args.seed)
    print(f"data: n={args.n:,} dim={args.dim} words={sum(m.shape[0] for m in marginals):,} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    names = [s for s in args.strategies if args.mc_passes >= 2 or not _strategy(s).needs_mc_marginals]
    budget_names = [s for s in args.budget_strategies if s in names]
    mc = None
    if args.mc_passes >= 2 and any(_strategy(s).needs_mc_marginals for s in names + budget_names):
        t0 = time.perf_counter()
        mc = make_mc(marginals, args.mc_passes, args.seed)
        print(f"MC passes: {args.mc_passes} per sentence ({time.perf_counter() - t0:.1f} s)", flush=True)
    t0 = time.perf_counter()
    pool = PoolData(ids=[str(i) for i in range(args.n)], marginals=marginals, embeddings=emb,
                    labeled_embeddings=labeled, mc_marginals=mc)
    _ = pool.flat_marginals
    print(f"PoolData validation + concatenation: {time.perf_counter() - t0:.2f} s\n", flush=True)

    if not args.skip_ours:
        run_ours(pool, emb, labeled, marginals, args.k, names, budget_names)
    if args.skip_full_head_to_head and args.small_k <= 0:
        return

    print("\n## Head-to-head with small-text (same arrays, same 50 labeled rows for the coreset)\n")
    print(fmt_row(["task", "ours wall / CPU s", "small-text fn", "small-text wall / CPU s", "ratio st/ours",
                   "coverage ours", "coverage small-text"]))
    print(fmt_row(["---"] * 7), flush=True)
    data_args = (args.n, args.dim, args.seed)
    if not args.skip_full_head_to_head:
        head_to_head(emb, labeled, args.k, args.smalltext_timeout, data_args, None)
    if args.small_k <= 0:
        return
    if args.small_n is None or args.small_n >= args.n:
        head_to_head(emb, labeled, args.small_k, args.smalltext_timeout, data_args, None)
    else:
        small = np.sort(np.random.default_rng(args.seed + 1).choice(args.n, size=args.small_n, replace=False))
        head_to_head(emb[small], labeled, args.small_k, args.smalltext_timeout, data_args, small)


if __name__ == "__main__":
    main()
