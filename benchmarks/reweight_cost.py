"""Seconds per training step: plain vs learning-to-reweight (double backward vs JVP), on MiniLM.

    .venv/bin/python benchmarks/reweight_cost.py            # all variants, one table
    .venv/bin/python benchmarks/reweight_cost.py --variant jvp --json   # one variant (child mode)

Timing: one process builds the model once and runs the variants round-robin, step by step, on the
same batches, so a load change on a shared machine hits every variant alike; medians are taken
after warm-up. Peak RSS: each variant then runs a few steps alone in a child process (ru_maxrss is
a per-process high-water mark, VmHWM). Per-phase medians (they need not add up to the total median):

- plain:        fwd, bwd, opt (clip + AdamW + schedule-free step)
- reference:    inner (fwd + ∇θ Σεℓ with create_graph), virtual (meta fwd at θ − α∇), eps_bwd
                (second-order backward to ε), then the real fwd, bwd, opt
- jvp-separate: meta (meta fwd + bwd, no dropout), jvp (torch.func.jvp of the loss vector, no
                dropout), then the real fwd, bwd, opt — `training.reweight.fast_weights` + a step
- jvp:          meta, dual_fwd (one train-mode forward giving the losses and their JVP), bwd, opt —
                what `training.trainer` runs with `meta_every=1`
- jvp-every:    the same, but the meta gradient is recomputed only every `--meta-every` steps and
                reused in between (`TrainConfig.meta_every`); its cost is amortised, so compare means

"vs plain" divides means (over a multiple of `--meta-every` steps), because a median would hide the
amortised meta step; the medians are shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

VARIANTS = ("plain", "reference", "jvp-separate", "jvp", "jvp-every")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO.parent / "shared" / "data")) / "bc5cdr"


def peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6  # kB -> GB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_variants(args: argparse.Namespace, variants: list[str], steps: int) -> dict[str, dict]:
    """Time `variants` round-robin for `args.warmup` + `steps` steps; per-variant medians."""
    import torch
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from training import reweight as rw
    from training.data import label_set, load_split, sample
    from training.model import StudentTagger
    from training.trainer import TrainConfig, _param_groups

    torch.manual_seed(0)
    train = sample(load_split(args.data / "train.jsonl"), args.batch * (steps + args.warmup), 0)
    meta = sample(load_split(args.data / "dev.jsonl"), args.meta_batch * (steps + args.warmup), 0)
    tagger = StudentTagger.from_pretrained(label_set(train + meta), args.encoder, max_length=args.max_length)
    model = tagger.model
    enc_train, enc_meta = tagger.encode_examples(train), tagger.encode_examples(meta)
    config = TrainConfig()
    alphas = rw.step_sizes(model, config.encoder_lr, config.head_lr)
    optimizer = torch.optim.AdamW(_param_groups(model, config), eps=config.adam_eps, weight_decay=0.0)
    phases: dict[tuple[str, str], list[float]] = {}
    current = [""]  # the variant being timed, for Clock

    class Clock:
        def __init__(self) -> None:
            self.t = time.perf_counter()

        def lap(self, name: str) -> None:
            now = time.perf_counter()
            phases.setdefault((current[0], name), []).append(now - self.t)
            self.t = now

    def real_step(clock: Clock, batch: dict, weights: torch.Tensor | None) -> None:
        model.train()
        logits = model(**rw.model_inputs(batch)).logits
        if weights is None:
            loss = rw.token_mean_loss(logits, batch["labels"])
        else:
            loss = (weights * rw.per_sentence_losses(logits, batch["labels"])).sum()
        clock.lap("fwd")
        finish(clock, loss)

    def finish(clock: Clock, loss: torch.Tensor) -> None:
        loss.backward()
        clock.lap("bwd")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.lap("opt")

    def plain(batch: dict, meta_batch: dict) -> None:
        real_step(Clock(), batch, None)

    def reference(batch: dict, meta_batch: dict) -> None:
        # rw.reference_meta_gradient, split into its phases (checked equal to it below).
        clock = Clock()
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with rw.no_dropout(model), sdpa_kernel([SDPBackend.MATH]):
            logits = functional_call(model, params, args=(), kwargs=rw.model_inputs(batch)).logits
            losses = rw.per_sentence_losses(logits, batch["labels"])
            eps = torch.zeros_like(losses.detach()).requires_grad_()
            grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
            clock.lap("inner")
            virtual = {n: p - alphas[n] * g for (n, p), g in zip(params.items(), grads, strict=True)}
            meta_loss = rw.token_mean_loss(
                functional_call(model, virtual, args=(), kwargs=rw.model_inputs(meta_batch)).logits,
                meta_batch["labels"])
            clock.lap("virtual")
            (g_eps,) = torch.autograd.grad(meta_loss, eps)
            clock.lap("eps_bwd")
        real_step(clock, batch, rw.normalise_weights(-g_eps))

    def jvp_separate(batch: dict, meta_batch: dict) -> None:
        clock = Clock()
        tangent = rw.meta_tangent(model, meta_batch, alphas)
        clock.lap("meta")
        weights = rw.normalise_weights(rw.sentence_alignments(model, batch, tangent))
        clock.lap("jvp")
        real_step(clock, batch, weights)

    cached: dict[str, dict] = {}
    count = [0]

    def jvp_every(batch: dict, meta_batch: dict) -> None:
        if count[0] % args.meta_every == 0 or "tangent" not in cached:
            clock = Clock()
            cached["tangent"] = rw.meta_tangent(model, meta_batch, alphas)
            clock.lap("meta (when due)")
        count[0] += 1
        fused_step(Clock(), batch, cached["tangent"])

    def jvp_fused(batch: dict, meta_batch: dict) -> None:
        clock = Clock()
        tangent = rw.meta_tangent(model, meta_batch, alphas)
        clock.lap("meta")
        fused_step(clock, batch, tangent)

    def fused_step(clock: Clock, batch: dict, tangent: dict) -> None:
        model.train()
        losses, alignments = rw.losses_and_alignments(model, batch, tangent)
        loss = (rw.normalise_weights(alignments) * losses).sum()
        clock.lap("dual_fwd")
        finish(clock, loss)

    step_fns: dict[str, Callable[[dict, dict], None]] = {
        "plain": plain, "reference": reference, "jvp-separate": jvp_separate, "jvp": jvp_fused,
        "jvp-every": jvp_every}
    if "reference" in variants:  # the timed copy must compute what the library computes
        b, m = tagger.collate(enc_train[: args.batch]), tagger.collate(enc_meta[: args.meta_batch])
        expected = rw.reference_weights(model, b, m, alphas)
        model.train()
        torch.testing.assert_close(expected, rw.fast_weights(model, b, m, alphas), rtol=1e-3, atol=1e-5)
    totals: dict[str, list[float]] = {v: [] for v in variants}
    widths = []
    for i in range(args.warmup + steps):
        batch = tagger.collate(enc_train[i * args.batch : (i + 1) * args.batch])
        meta_batch = tagger.collate(enc_meta[i * args.meta_batch : (i + 1) * args.meta_batch])
        if i == args.warmup:
            phases.clear()
            count[0] = 0  # the amortised variant's cycle starts with the timed steps
        widths.append(batch["input_ids"].shape[1])
        for variant in variants:
            current[0] = variant
            t = time.perf_counter()
            step_fns[variant](batch, meta_batch)
            if i >= args.warmup:
                totals[variant].append(time.perf_counter() - t)
    return {
        v: {
            "variant": v,
            "median_s": statistics.median(totals[v]) if totals[v] else float("nan"),
            "mean_s": statistics.mean(totals[v]) if totals[v] else float("nan"),
            "phases": {name: statistics.median(ts) for (var, name), ts in phases.items() if var == v},
            "peak_rss_gb": peak_rss_gb(),
            "median_padded_len": statistics.median(widths),
            "threads": torch.get_num_threads(),
        }
        for v in variants
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rss-of", choices=VARIANTS, help="child mode: peak RSS of one variant alone")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--encoder", default=None, help="local checkpoint (default: packaged MiniLM)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps (a multiple of --meta-every)")
    parser.add_argument("--meta-every", type=int, default=4, help="jvp-every: steps per meta gradient")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rss-steps", type=int, default=3, help="steps per RSS child (after warm-up)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if args.rss_of:
        print(json.dumps(run_variants(args, [args.rss_of], args.rss_steps)[args.rss_of]))
        return

    load_before = os.getloadavg()[0]
    timed = run_variants(args, list(args.variants), args.steps)
    load_after = os.getloadavg()[0]
    forwarded = list(argv if argv is not None else sys.argv[1:])
    results = []
    for variant in args.variants:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-of", variant, *forwarded],
            check=True, capture_output=True, text=True, cwd=REPO,
        )
        rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_gb"]
        results.append({**timed[variant], "peak_rss_gb": rss})
    plain = results[0]["mean_s"]
    print(f"\nMiniLM, batch {args.batch} train + {args.meta_batch} meta, BC5CDR, max length "
          f"{args.max_length}, {args.steps} steps after {args.warmup} warm-up, jvp-every: meta every "
          f"{args.meta_every} steps, "
          f"{results[0]['threads']} threads, median padded length {results[0]['median_padded_len']:.0f}, "
          f"load average {load_before:.2f} → {load_after:.2f} over the timing\n")
    print("| variant | mean s/step | vs plain (means) | median s/step | peak RSS | where the time goes (median s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in r["phases"].items())
        print(f"| {r['variant']} | {r['mean_s']:.3f} | {r['mean_s'] / plain:.2f}× | {r['median_s']:.3f} | "
              f"{r['peak_rss_gb']:.2f} GB | {parts} |")


if __name__ == "__main__":
    main()
