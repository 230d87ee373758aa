"""Benchmark the Transfusion attention mask: dense-mask SDPA vs compiled FlexAttention vs plain causal SDPA.

Not a test and not run by CI. One run times the three side by side (interleaved, round-robin, median of the
repeats) on sequences with half the tokens in images, and prints the times, their ratios and the block density
(the fraction of score tiles FlexAttention computes). See nbs/03_attention_masks.ipynb.

    python bench/attention_masks.py                      # CPU, small defaults (the first compile takes ~30 s+)
    python bench/attention_masks.py --device cuda        # GPU: the 512..4096 sweep, bf16
    python bench/attention_masks.py --device cuda --lens 512 1024 2048 4096 --batch 4 --heads 16 --backward
    python bench/attention_masks.py --cond-drop          # also hide the text before each image in sample 0 (kv_start)

Layout: units of `image_len - 2` text tokens, BOI, `image_len` patches, EOI (so half the tokens are patches),
repeated to fill the sequence; any remainder is text.
"""
from __future__ import annotations
import argparse, statistics, time

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from transfusion_nb.masks import batch_layouts, block_density, dense_attn_mask, transfusion_block_mask


def layout_for(n: int, image_len: int) -> str:
    "A layout string of length n with half the tokens in images of `image_len` patches (BOI/EOI added by the parser)."
    unit = 2 * image_len  # (image_len - 2) text + BOI + image_len patches + EOI
    if image_len < 3 or n < unit: raise SystemExit(f'need image_len >= 3 and n >= 2 * image_len, got n={n}, image_len={image_len}')
    items = [f't{image_len - 2} i{image_len}'] * (n // unit)
    if n % unit: items.append(f't{n % unit}')
    return ' '.join(items)


def dropped_start(mp: torch.Tensor, n: int) -> torch.Tensor:
    "`kv_start` (b, n) hiding the prefix from every image block (BOI, patches, EOI) of sample 0: the model's conditioning dropout."
    start = torch.zeros(mp.shape[0], n, dtype=torch.long, device=mp.device)
    for _, off, length in mp[0].tolist():
        if length: start[0, off - 1:off + length + 1] = off - 1
    return start


def sync(device: torch.device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def time_side_by_side(fns: dict, device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    "Median seconds per call of each function, measured round-robin so that drift hits all of them alike."
    for fn in fns.values():
        for _ in range(warmup): fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device); t0 = time.perf_counter(); fn(); sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--lens', type=int, nargs='+', default=None, help='sequence lengths (default: 256 512 on CPU, 512 1024 2048 4096 on CUDA)')
    p.add_argument('--image-len', type=int, default=None, help='patches per image (default: 64 on CPU, 128 on CUDA)')
    p.add_argument('--batch', type=int, default=None, help='batch size (default: 1 on CPU, 4 on CUDA)')
    p.add_argument('--heads', type=int, default=None, help='attention heads (default: 4 on CPU, 16 on CUDA)')
    p.add_argument('--dim-head', type=int, default=64)
    p.add_argument('--block-size', type=int, default=128, help='BlockMask tile size')
    p.add_argument('--dtype', default=None, help='float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on CUDA)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=None, help='timed calls per function (default: 10 on CPU, 50 on CUDA)')
    p.add_argument('--backward', action='store_true', help='time forward + backward instead of forward only')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    p.add_argument('--compile-block-mask', action=argparse.BooleanOptionalAction, default=None,
                   help='build the BlockMask with torch.compile (default: on CUDA only)')
    p.add_argument('--cond-drop', action='store_true', help='sample 0 as the model masks a sample that lost its condition')
    a = p.parse_args(argv)

    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cuda = device.type == 'cuda'
    lens = a.lens or ([512, 1024, 2048, 4096] if cuda else [256, 512])
    image_len = a.image_len or (128 if cuda else 64)
    batch, heads = a.batch or (4 if cuda else 1), a.heads or (16 if cuda else 4)
    dtype = getattr(torch, a.dtype or ('bfloat16' if cuda else 'float32'))
    repeats = a.repeats or (50 if cuda else 10)
    compile_bm = cuda if a.compile_block_mask is None else a.compile_block_mask

    name = torch.cuda.get_device_name(device) if cuda else 'CPU'
    print(f'torch {torch.__version__}, {name}, {dtype}, batch {batch}, heads {heads}, dim_head {a.dim_head}, '
          f'images of {image_len} patches, tiles of {a.block_size}, {"forward + backward" if a.backward else "forward"}, '
          f'median of {repeats}{", sample 0 with its condition dropped" if a.cond_drop else ""}')
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    g = torch.Generator(device=device).manual_seed(0)

    rows = []
    for n in lens:
        mp, seq_lens, n_ = batch_layouts([layout_for(n, image_len)] * batch, device=device)
        assert n_ == n
        start = dropped_start(mp, n) if a.cond_drop else None
        build = {  # building the masks with the model's calls (Transfusion.attn_mask; validated once beforehand)
            'dense mask': lambda: dense_attn_mask(mp, n, seq_lens, validate=False, kv_start=start),
            'block mask': lambda: transfusion_block_mask(mp, n, seq_lens, block_size=a.block_size, compile=compile_bm,
                                                         validate=False, kv_start=start),
        }
        t_build = time_side_by_side(build, device, warmup=1, repeats=min(repeats, 10))  # the warm-up call may compile
        mask, bm = build['dense mask'](), build['block mask']()
        attn_mask = mask[:, None]  # (b, 1, i, j): one mask for all heads

        q, k, v = (torch.randn(batch, heads, n, a.dim_head, device=device, dtype=dtype, generator=g).requires_grad_(a.backward)
                   for _ in range(3))
        dout = torch.randn_like(q)
        def run(f):
            def call():
                out = f()
                if a.backward: out.backward(dout)
                return out
            return call
        fns = {
            'causal': run(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
            'dense': run(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)),
            'flex': run(lambda: compiled_flex(q, k, v, block_mask=bm)),
        }
        t0 = time.perf_counter(); fns['flex'](); sync(device); t_compile = time.perf_counter() - t0
        with torch.no_grad():  # the three agree (the masked SDPA is the reference)
            err = (compiled_flex(q, k, v, block_mask=bm) - F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)).abs().max().item()
        t = time_side_by_side(fns, device, a.warmup, repeats)
        causal_density = block_density(torch.ones(1, n, n, dtype=torch.bool, device=device).tril(), a.block_size)
        rows.append((n, t, block_density(bm), causal_density, t_build['dense mask'], t_build['block mask'], t_compile, err))
        print(f'  n={n}: first flex call (compile) {t_compile:.1f} s, max |flex - dense| = {err:.1e}', flush=True)

    ms = lambda s: f'{s * 1e3:9.3f}'
    print('\n    n | causal ms |  dense ms |   flex ms | dense/causal | flex/causal | dense/flex | '
          'tiles computed (causal) | dense mask ms | block mask ms')
    for n, t, dens, cdens, tdm, tbm, _, _ in rows:
        print(f'{n:5d} | {ms(t["causal"])} | {ms(t["dense"])} | {ms(t["flex"])} | {t["dense"] / t["causal"]:12.2f} | '
              f'{t["flex"] / t["causal"]:11.2f} | {t["dense"] / t["flex"]:10.2f} | {dens:13.1%} ({cdens:5.1%}) | '
              f'{ms(tdm)}     | {ms(tbm)}')


if __name__ == '__main__':
    main()
