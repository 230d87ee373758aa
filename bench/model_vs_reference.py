"""Our Transfusion model against the reference implementation (transfusion-pytorch 0.9.4), on CPU.

Five workloads, the same for both at matching sizes (width, depth, heads, head width, feed-forward width, residual streams):

  (a) a training step (forward + backward + AdamW) on 4 samples of [text 64, image 16x16 latents of width 16, text 32,
      image 8x8 latents of width 16] at width 512, depth 8;
  (b) the same at width 128, depth 4 on 32 samples of [text 8, image 4x4];
  (c) text decoding with the key/value cache: tokens per second (one row, a 64-token prompt);
  (d) one 16x16 latent image after a 64-token prompt, 32 Euler sampler steps;
  (e) the default digits model (`transfusion_nb.digits.digits_model`: width 64, depth 2, 8x8 images in 2x2 patches)
      generating 500 images as its evaluation does (`generate_digits`: one batch, 15 midpoint steps, guidance 1.5):
      images per second. The reference has no batched or guided sampling: its `sample`, one image at a time, without
      guidance, at the same sizes (a 4x4 grid of 4-wide latents is the same 16 tokens of 4 numbers), timed on fewer.

Each figure is printed for both, with the ratio ours/reference (below 1: ours is faster), and for ours the fraction of
the machine's fp32 matmul throughput that the model's FLOPs reach (model FLOPs / time / measured matmul FLOP/s).

    python bench/model_vs_reference.py            # the full run (a few minutes)
    python bench/model_vs_reference.py --quick    # smaller (a) and fewer repeats, for a smoke test
"""
from __future__ import annotations
import argparse
import logging
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault('TQDM_DISABLE', '1')   # before tqdm is imported: the reference's progress bars stay quiet
import torch


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    "Median wall time of `fn()` over `repeats` runs, after `warmup` runs."
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_pair(fn_a, fn_b, repeats: int, warmup: int = 1) -> tuple[float, float]:
    "Median wall times of `fn_a()` and `fn_b()`, run alternately (a shared machine's load then hits both alike)."
    for _ in range(warmup): fn_a(); fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn_a(); ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); fn_b(); tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def matmul_flops(threads: int, sizes: tuple[int, ...] = (1024, 2048), repeats: int = 20) -> float:
    "Measured fp32 matmul throughput (FLOP/s): the best single (n x n) @ (n x n) product over `repeats` tries at each size.\n\n    The best case, so that the fraction of it that the model reaches is a conservative figure."
    best = 0.
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(3): a @ b
        t = min(timeit(lambda: a @ b, 1, 0) for _ in range(repeats))
        best = max(best, 2 * size ** 3 / t)
    return best


def layer_flops(dim: int, heads: int, dim_head: int, ff_mult: float = 4.) -> int:
    "Multiply-adds x 2 per token of one layer's matmuls (qkv, out, SwiGLU in and out)."
    inner, ff = heads * dim_head, int(dim * ff_mult * 2 / 3)
    return 2 * (dim * 3 * inner + inner * dim + dim * 2 * ff + ff * dim)


def train_flops(cfg: dict, seq_lens: list[int], n_image_tokens: int, n_text_targets: int, latent: int, vocab: int) -> float:
    "Model FLOPs of one training step: 3 x forward (matmuls on every token, attention on each sample's real length)."
    tokens = sum(seq_lens)
    fwd = cfg['depth'] * (tokens * layer_flops(cfg['dim'], cfg['heads'], cfg['dim_head'])
                          + sum(4 * n * n * cfg['heads'] * cfg['dim_head'] for n in seq_lens))
    fwd += 2 * n_text_targets * cfg['dim'] * vocab + 2 * 2 * n_image_tokens * cfg['dim'] * latent   # text head, patches in/out
    return 3 * fwd


def decode_flops(cfg: dict, context: int, vocab: int) -> float:
    "Model FLOPs of one cached decoding step at a context length."
    return cfg['depth'] * (layer_flops(cfg['dim'], cfg['heads'], cfg['dim_head']) + 4 * context * cfg['heads'] * cfg['dim_head']) \
        + 2 * cfg['dim'] * vocab


def make_models(cfg: dict, latent: int, shape: tuple[int, int], streams: int, vocab: int):
    "Our model and the reference at the same sizes."
    from transfusion_nb.model import Transfusion
    import transfusion_nb.sampling  # attaches the generation methods
    from transfusion_pytorch import Transfusion as RefTransfusion
    torch.manual_seed(0)
    ours = Transfusion(num_text_tokens=vocab, dim=cfg['dim'], depth=cfg['depth'], heads=cfg['heads'], dim_head=cfg['dim_head'],
                       ff_mult=4., num_residual_streams=streams, channels=latent, image_size=shape, patch_size=1,
                       diffusion='flow', cond_drop_prob=0.)
    ref = RefTransfusion(num_text_tokens=vocab, dim_latent=latent, channel_first_latent=True, modality_default_shape=shape,
                         modality_num_dim=2, add_pos_emb=True,
                         transformer=dict(dim=cfg['dim'], depth=cfg['depth'], heads=cfg['heads'], dim_head=cfg['dim_head'],
                                          ff_expansion_factor=4, num_residual_streams=streams),
                         odeint_kwargs=dict(atol=1e-5, rtol=1e-5, method='euler'))
    return ours, ref


def params(m) -> int: return sum(p.numel() for p in m.parameters())


def row(name: str, ours: float, ref: float, unit: str, higher_is_better: bool = False, mfu: float | None = None):
    "One figure for both; the ratio is always of times, ours/reference (below 1: ours is faster)."
    ratio = ref / ours if higher_is_better else ours / ref
    note = f'  ours at {mfu:.1%} of matmul throughput' if mfu is not None else ''
    print(f'{name:<44} ours {ours:9.4g} {unit:<6} reference {ref:9.4g} {unit:<6} time ours/ref {ratio:6.3f}'
          f' ({1 / ratio:.2f}x {"faster" if ratio <= 1 else "slower"}){note}', flush=True)


def bench_train(label: str, cfg: dict, samples_fn, batch: int, latent: int, shape, streams: int, vocab: int, repeats: int, peak: float):
    ours, ref = make_models(cfg, latent, shape, streams, vocab)
    torch.manual_seed(1)
    samples = [samples_fn() for _ in range(batch)]
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)     # the same optimizer for both: fused AdamW
    opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-4, fused=True)

    def step_ours():
        loss = ours(samples).loss
        opt_o.zero_grad(set_to_none=True); loss.backward(); opt_o.step()

    def step_ref():
        loss = ref([list(s) for s in samples])
        opt_r.zero_grad(set_to_none=True); loss.backward(); opt_r.step()

    t_o, t_r = timeit_pair(step_ours, step_ref, repeats)
    packed = ours.pack(samples)
    seq_lens = packed.seq_lens.tolist()
    flops = train_flops(cfg, seq_lens, int((packed.image_ids >= 0).sum()), int((packed.labels >= 0).sum()), latent, ours.vocab.size)
    print(f'  [{label}] params ours {params(ours) / 1e6:.2f}M, reference {params(ref) / 1e6:.2f}M; '
          f'{sum(seq_lens)} tokens in the batch (our packing), {flops / 1e9:.1f} GFLOP per step', flush=True)
    row(f'({label}) training step, seconds', t_o, t_r, 's', mfu=flops / t_o / peak)
    return ours, ref


def bench_decode(ours, ref, cfg: dict, vocab: int, prompt_len: int, new_tokens: int, repeats: int, peak: float):
    "(c): tokens per second of cached text decoding, one row, sampling at temperature 1 restricted to text tokens."
    from transfusion_pytorch.transfusion import min_p_filter
    ours.eval(); ref.eval()
    prompt = torch.randint(0, vocab, (prompt_len,))

    def run_ours():
        out = ours.generate([[prompt]], max_tokens=new_tokens, temperature=1., min_p=0.1, allow_images=False)
        assert out[0][0].numel() == new_tokens

    @torch.no_grad()
    def run_ref():   # the text branch of the reference's own `sample` loop, with the cache, restricted to text tokens
        seq, cache = torch.cat([torch.tensor([ref.sos_id]), prompt]), None
        for _ in range(new_tokens):
            logits, cache = ref.forward([[seq]], return_loss=False, cache=cache, decode_length=1,
                                        decoding_text_or_modality='text', return_kv_cache=True)
            logits = logits[0][-1].masked_fill(~ref.text_only_logits_mask, -torch.finfo(logits.dtype).max)
            probs = (min_p_filter(logits, min_p=0.1) / 1.).softmax(dim=-1)
            seq = torch.cat([seq, torch.multinomial(probs, 1)])

    t_o, t_r = timeit_pair(run_ours, run_ref, repeats)
    tps_o, tps_r = new_tokens / t_o, new_tokens / t_r
    flops = sum(decode_flops(cfg, prompt_len + k, ours.vocab.size) for k in range(new_tokens))
    row('(c) text decoding with the cache, tokens/s', tps_o, tps_r, 'tok/s', higher_is_better=True, mfu=flops / t_o / peak)


def image_flops(cfg: dict, rows: int, n_img: int, context: int) -> float:
    "Model FLOPs of one denoiser call: `rows` images of `n_img` tokens over `context` cached keys each."
    return cfg['depth'] * rows * (n_img * layer_flops(cfg['dim'], cfg['heads'], cfg['dim_head'])
                                  + 4 * n_img * (context + n_img) * cfg['heads'] * cfg['dim_head'])


def bench_image(ours, ref, cfg: dict, vocab: int, prompt_len: int, latent: int, shape, steps: int, repeats: int, peak: float):
    "(d): one image after a text prompt, `steps` Euler steps, no guidance."
    ours.eval(); ref.eval()
    prompt = torch.randint(0, vocab, (prompt_len,))
    noise = torch.randn(1, latent, *shape)

    def run_ours():
        img = ours.generate_images([prompt], steps=steps, method='euler', noise=noise, image_shape=(latent, *shape))
        assert img.shape == (1, latent, *shape)

    meta = torch.cat([torch.tensor([ref.meta_id]), ref.char_tokenizer(','.join(map(str, shape))), torch.tensor([ref.som_ids[0]])])
    ref_prompt = [torch.cat([prompt, meta])]      # ends with [som]: the reference switches to image decoding at once

    @torch.no_grad()
    def run_ref():
        out = ref.sample(ref_prompt, max_length=0, cache_kv=True, fixed_modality_shape=shape, modality_steps=steps + 1)
        assert any(isinstance(x, tuple) for x in out)

    t_o, t_r = timeit_pair(run_ours, run_ref, repeats)
    flops = steps * image_flops(cfg, 1, shape[0] * shape[1], prompt_len + 6)
    row(f'(d) one {shape[0]}x{shape[1]} image, {steps} steps, seconds', t_o, t_r, 's', mfu=flops / t_o / peak)


def bench_digits(n_images: int, n_ref: int, repeats: int, peak: float):
    "(e): images per second of the default digits model generating `n_images` as the evaluation does; the reference on `n_ref`."
    from transfusion_nb.digits import digits_model, DIGITS_GUIDANCE, DIGITS_MODEL
    from transfusion_nb.evaluation import generate_digits
    from transfusion_nb.data import digits_tokenizer, DIGIT_WORDS
    from transfusion_pytorch import Transfusion as RefTransfusion
    tok = digits_tokenizer()
    ours = digits_model(seed=0).eval()        # untrained weights: the time does not depend on them
    cfg = {k: DIGITS_MODEL[k] for k in ('dim', 'depth', 'heads', 'dim_head')}
    p = DIGITS_MODEL['patch_size']
    shape = (8 // p, 8 // p)
    torch.manual_seed(0)
    ref = RefTransfusion(num_text_tokens=tok.vocab_size, dim_latent=p * p, channel_first_latent=True, modality_default_shape=shape,
                         modality_num_dim=2, add_pos_emb=True,
                         transformer=dict(dim=cfg['dim'], depth=cfg['depth'], heads=cfg['heads'], dim_head=cfg['dim_head'],
                                          ff_expansion_factor=4)).eval()
    steps = ours.diffusion.steps                                   # 15 midpoint steps: 30 denoiser calls
    words = [tok.encode(w) for w in DIGIT_WORDS]
    meta = torch.cat([torch.tensor([ref.meta_id]), ref.char_tokenizer(','.join(map(str, shape))), torch.tensor([ref.som_ids[0]])])

    def run_ours():
        out = generate_digits(ours, tok, n_images // 10, guidance_scale=DIGITS_GUIDANCE)
        assert sum(len(v) for v in out.values()) == n_images

    @torch.no_grad()
    def run_ref():   # one image per call: the reference samples one sequence at a time
        for k in range(n_ref):
            out = ref.sample([torch.cat([words[k % 10], meta])], max_length=0, cache_kv=True, fixed_modality_shape=shape,
                             modality_steps=steps + 1)
            assert any(isinstance(x, tuple) for x in out)

    t_o, t_r = timeit_pair(run_ours, run_ref, repeats)
    ips_o, ips_r = n_images / t_o, n_ref / t_r
    n_img, context = shape[0] * shape[1], max(len(w) for w in words) + 1   # the prompt (one word) and BOI
    flops = 2 * steps * image_flops(cfg, 2 * n_images, n_img, context)   # midpoint: 2 calls a step; guided: 2 rows an image
    row(f'(e) digits model, {n_images} images (ours guided), images/s', ips_o, ips_r, 'img/s', higher_is_better=True,
        mfu=flops / t_o / peak)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=2, help='torch threads (fixed for both)')
    ap.add_argument('--streams', type=int, default=1, help='residual streams for both (1: plain residual, 4: hyper-connections)')
    ap.add_argument('--quick', action='store_true', help='(a) at width 256, depth 4; fewer repeats')
    ap.add_argument('--only', default='abcde', help='which workloads to run, e.g. "bd"')
    ap.add_argument('--repeats', type=int, default=None, help='timed runs per figure (median); default 3, quick 2')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    logging.disable(logging.WARNING)
    try:
        from loguru import logger
        logger.disable('transfusion_pytorch')                      # the reference logs every sample() call
    except ImportError: pass
    repeats = args.repeats or (2 if args.quick else 3)
    vocab, latent = 256, 16
    peak = matmul_flops(args.threads)
    print(f'torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cpu(s); measured fp32 matmul {peak / 1e9:.1f} GFLOP/s; '
          f'residual streams {args.streams}; median of {repeats} runs', flush=True)
    big = dict(dim=256, depth=4, heads=4, dim_head=64) if args.quick else dict(dim=512, depth=8, heads=8, dim_head=64)
    ours = ref = None
    if 'a' in args.only or 'c' in args.only or 'd' in args.only:
        sample_a = lambda: [torch.randint(0, vocab, (64,)), torch.randn(latent, 16, 16), torch.randint(0, vocab, (32,)), torch.randn(latent, 8, 8)]
        if 'a' in args.only:
            ours, ref = bench_train('a', big, sample_a, 4, latent, (16, 16), args.streams, vocab, repeats, peak)
        else: ours, ref = make_models(big, latent, (16, 16), args.streams, vocab)
    if 'b' in args.only:
        small = dict(dim=128, depth=4, heads=4, dim_head=32)
        sample_b = lambda: [torch.randint(0, vocab, (8,)), torch.randn(latent, 4, 4)]
        bench_train('b', small, sample_b, 32, latent, (4, 4), args.streams, vocab, repeats, peak)
    if 'c' in args.only: bench_decode(ours, ref, big, vocab, 64, 32 if args.quick else 64, repeats, peak)
    if 'd' in args.only: bench_image(ours, ref, big, vocab, 64, latent, (16, 16), 32, max(1, repeats - 1), peak)
    if 'e' in args.only: bench_digits(500, 10 if args.quick else 20, repeats, peak)
    return 0


if __name__ == '__main__':
    sys.exit(main())
