"""Where the time of workload (b) of `model_vs_reference.py` goes, and what bounds its share of the matmul peak.

(b) is a training step (forward, backward, fused AdamW) of our Transfusion at width 128, depth 4 (4 heads of 32) on 32
samples of [text 8, image 4x4 latents of width 16]: 960 tokens, 4.8 GFLOP. This script

  1. times the step (best of `--repeats`, after warm-up: the best case, robust to a busy machine),
  2. replays every matrix product of one step alone (the same shapes and count, captured by the profiler): the time the
     step would take if everything else were free, so the highest share of the peak the step could reach,
  3. profiles the step and sums the operators' own time by kind (products, attention kernel, element-wise work of norms,
     modulation, rotary, SwiGLU and residuals, copies and concatenations, optimizer, the rest).

    python bench/train_step_bound.py                 # 2 threads, as the benchmark
    python bench/train_step_bound.py --threads 1
    python bench/train_step_bound.py --short-attention 0   # every attention through the fused kernel (the old path)
    python bench/train_step_bound.py --compile       # also: the same step with the transformer under torch.compile
"""
from __future__ import annotations
import argparse
import collections
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_vs_reference import make_models, matmul_flops, train_flops   # noqa: E402

PRODUCTS = ('aten::mm', 'aten::addmm', 'aten::bmm')
KINDS = {  # operator -> kind (operators not listed: 'rest')
    **{k: 'matrix products' for k in PRODUCTS},
    **{k: 'element-wise (norms, modulation, rotary, SwiGLU, residual, loss)' for k in (
        'aten::mul', 'aten::add', 'aten::add_', 'aten::addcmul', 'aten::silu', 'aten::silu_backward', 'aten::sigmoid',
        'aten::pow', 'aten::div', 'aten::div_', 'aten::sum', 'aten::mean', 'aten::rsqrt', 'aten::roll', 'aten::neg', 'aten::sub',
        'aten::where', 'aten::_fused_rms_norm', 'aten::_fused_rms_norm_backward', 'aten::mse_loss', 'aten::mse_loss_backward',
        'aten::_log_softmax', 'aten::_log_softmax_backward_data', 'aten::nll_loss_forward', 'aten::nll_loss_backward',
        'aten::cos', 'aten::sin', 'aten::exp', 'aten::mul_', 'aten::masked_fill')},
    **{k: 'gathers and scatters (embedding, modulation rows, image tokens)' for k in (
        'aten::index_select', 'aten::index_add_', 'aten::scatter_add_', 'aten::index', 'aten::index_copy',
        'aten::embedding_dense_backward', 'aten::index_put_', 'aten::_index_put_impl_', 'aten::gather')},
    **{k: 'copies, concatenations, fills' for k in (
        'aten::cat', 'aten::copy_', 'aten::_to_copy', 'aten::fill_', 'aten::zero_', 'aten::clone', 'aten::contiguous',
        'aten::stack', 'aten::new_zeros', 'aten::zeros_like')},
    'aten::_fused_adamw_': 'optimizer (fused AdamW)',
}


def attention_kind(name: str) -> str | None:
    return 'attention kernel (SDPA, forward and backward)' if 'scaled_dot_product' in name else None


def setup(threads: int, compiled: bool = False):
    torch.set_num_threads(threads)
    vocab, latent = 256, 16
    cfg = dict(dim=128, depth=4, heads=4, dim_head=32)
    ours, _ = make_models(cfg, latent, (4, 4), 1, vocab)
    if compiled: ours.transformer.compile()   # inductor: fused C++ loops for the element-wise work on the CPU
    torch.manual_seed(1)
    samples = [[torch.randint(0, vocab, (8,)), torch.randn(latent, 4, 4)] for _ in range(32)]
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)

    def step():
        loss = ours(samples).loss
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    packed = ours.pack(samples)
    flops = train_flops(cfg, packed.seq_lens.tolist(), int((packed.image_ids >= 0).sum()), int((packed.labels >= 0).sum()),
                        latent, ours.vocab.size)
    return step, flops


def best(fn, repeats: int, warmup: int = 3) -> float:
    """The best time of `fn()` over `repeats` runs: CPU time of this process on one thread (what the work costs, however
    long it waits for a core on a busy machine), wall time on more."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeats):
        t0 = clock(); fn(); ts.append(clock() - t0)
    return min(ts)


def peak_flops(repeats: int, size: int = 1024) -> float:
    "The best fp32 (size x size) @ (size x size) throughput, timed like the step (`best`)."
    a, b = torch.randn(size, size), torch.randn(size, size)
    return max(2 * size ** 3 / best(lambda: a @ b, repeats), matmul_flops(torch.get_num_threads()))


def products_of(prof) -> list[tuple[str, list]]:
    "Every matrix product of the profiled run: (name, input shapes), once per call."
    return [(e.name, e.input_shapes) for e in prof.events() if e.name in PRODUCTS]


def replay(products: list[tuple[str, list]]):
    "A function running the same products on random operands of the same shapes."
    calls = []
    for name, shapes in products:
        if name == 'aten::addmm': args = [torch.randn(*shapes[0]), torch.randn(*shapes[1]), torch.randn(*shapes[2])]; f = torch.addmm
        elif name == 'aten::bmm': args = [torch.randn(*shapes[0]), torch.randn(*shapes[1])]; f = torch.bmm
        else: args = [torch.randn(*shapes[0]), torch.randn(*shapes[1])]; f = torch.mm
        calls.append((f, args))
    def run():
        for f, args in calls: f(*args)
    return run


def by_kind(prof, steps: int) -> dict[str, float]:
    "Operators' own CPU time per step (seconds) summed by kind."
    out = collections.Counter()
    for e in prof.key_averages():
        if not e.key.startswith('aten::') and 'scaled_dot_product' not in e.key: kind = 'autograd and dispatch (not in an operator)'
        else: kind = attention_kind(e.key) or KINDS.get(e.key, 'rest')
        out[kind] += e.self_cpu_time_total / 1e6 / steps
    return dict(out.most_common())


def eager_vs_compiled(threads: int, repeats: int, rounds: int = 6) -> tuple[float, float, float]:
    "Median over `rounds` of the best step time, eager and with `torch.compile`, measured in turns in one process; and the compile time."
    eager, _ = setup(threads)
    t0 = time.perf_counter()
    compiled, _ = setup(threads, compiled=True)
    for _ in range(3): compiled()
    t_compile = time.perf_counter() - t0
    te, tc = [], []
    for _ in range(rounds):
        te.append(best(eager, repeats // rounds + 1, warmup=1)); tc.append(best(compiled, repeats // rounds + 1, warmup=1))
    return sorted(te)[rounds // 2], sorted(tc)[rounds // 2], t_compile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=2, help='torch threads')
    ap.add_argument('--repeats', type=int, default=20, help='timed runs (the best is kept)')
    ap.add_argument('--compile', action='store_true', help='also time the step with the transformer under torch.compile, beside eager')
    ap.add_argument('--short-attention', type=int, default=None,
                    help='most keys for the explicit softmax path of `attend` (transformer.SHORT_ATTENTION); 0: always the fused kernel')
    args = ap.parse_args(argv)
    if args.short_attention is not None:
        import transfusion_nb.transformer as tr
        tr.SHORT_ATTENTION = args.short_attention
    warnings.filterwarnings('ignore')
    from torch.profiler import profile, ProfilerActivity
    step, flops = setup(args.threads)
    peak = peak_flops(args.repeats)
    t_step = best(step, args.repeats)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof: step()
    prods = products_of(prof)
    t_prod = best(replay(prods), args.repeats)
    steps = 3
    with profile(activities=[ProfilerActivity.CPU]) as prof: [step() for _ in range(steps)]
    kinds = by_kind(prof, steps)
    total = sum(kinds.values())
    clock = 'CPU time' if args.threads == 1 else 'wall time'
    print(f'torch {torch.__version__}, {args.threads} thread(s); measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; best {clock} of {args.repeats}')
    print(f'(b) training step: {flops / 1e9:.2f} GFLOP, {t_step * 1e3:.1f} ms: {flops / t_step / peak:.1%} of the peak')
    print(f'its {len(prods)} matrix products alone: {t_prod * 1e3:.1f} ms, {flops / t_prod / peak:.1%} of the peak '
          f'(the bound if everything else took no time); {t_prod / t_step:.0%} of the step')
    print(f'operators\' own time by kind (profiled, {steps} steps; {total * 1e3:.1f} ms a step):')
    for k, v in kinds.items(): print(f'  {v / total:6.1%}  {v * 1e3:7.2f} ms  {k}')
    if args.compile:
        te, tc, t_compile = eager_vs_compiled(args.threads, args.repeats)
        print(f'torch.compile of the transformer (compiled in {t_compile:.0f} s), side by side, median of the best per round: '
              f'eager {te * 1e3:.1f} ms ({flops / te / peak:.1%}), compiled {tc * 1e3:.1f} ms ({flops / tc / peak:.1%}); compiled/eager {tc / te:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
