"""Batches of one picture format against mixed batches: the shapes run's training step, side by side.

Not a test and not run by CI. The shapes run's documents differ in length: an edit of a wide picture is about 30 % longer
than one of a square picture (82 against 64 tokens, with the names), and a batch is padded to its longest document. `TrainConfig(group_batches=True)`
draws every batch from one format (`ShapesDocuments.batch_groups`). This script builds the default shapes trainer twice
on the same documents, one with mixed batches and one with batches of one format, and times their steps in turns
(round-robin, after a warm-up), so that both see the same machine. It prints the time a step of each, their ratio, and
the share of real (not padding) tokens in the batches each draws. See nbs/16_shapes_transfusion.ipynb.

    python bench/shapes_batches.py                  # 2 threads, 4 rounds of 50 steps each
    python bench/shapes_batches.py --threads 1 --rounds 6 --steps 40
"""
from __future__ import annotations
import argparse, statistics, time

import torch

from transfusion_nb.shapes_run import shapes_trainer
from transfusion_nb.training import step_batches


def real_share(trainer, steps: int) -> float:
    "The share of real tokens in the padded batches of the trainer's next `steps` steps."
    real = padded = 0
    cfg = trainer.config
    for s in range(trainer.step, trainer.step + steps):
        mb = step_batches(len(trainer.data), s, cfg.batch_size, cfg.seed, groups=trainer.groups)[1][0]
        packed = trainer.model.pack([trainer.data[int(i)] for i in mb.examples])
        real, padded = real + int(packed.seq_lens.sum()), padded + packed.ids.numel()
    return real / padded


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=4, help='turns of each trainer')
    p.add_argument('--steps', type=int, default=50, help='steps timed per turn')
    p.add_argument('--scenes', type=int, default=2000, help='scenes per format of the documents')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    trainers = {k: shapes_trainer(None, seed=0, progress=False, data_overrides=dict(n_scenes=a.scenes), group_batches=g)
                for k, g in (('mixed', False), ('one format', True))}
    shares = {k: real_share(t, 100) for k, t in trainers.items()}
    times = {k: [] for k in trainers}
    for t in trainers.values():
        for _ in range(5): t.train_step()  # warm-up
    for r in range(a.rounds):
        for k, t in trainers.items():
            t0 = time.perf_counter()
            for _ in range(a.steps): t.train_step()
            times[k].append((time.perf_counter() - t0) / a.steps)
        print(f'round {r + 1}: ' + ', '.join(f'{k} {1000 * v[-1]:.1f} ms' for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in trainers: print(f'{k:>10}: {1000 * med[k]:6.1f} ms a step (median of {a.rounds}), real tokens {shares[k]:.0%} of the padded batch')
    print(f'ratio one format / mixed: {med["one format"] / med["mixed"]:.2f}')


if __name__ == '__main__': main()
