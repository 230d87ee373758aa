#!/usr/bin/env python
"""Check the training loop under DistributedDataParallel on the CPU (gloo).

Runs the same short job twice: 2 processes under torchrun, one micro-batch each, and 1 process with the
same global batch as 2 micro-batches (gradient accumulation). Passes when the 2 processes end with
bit-identical weights, only process 0 wrote the checkpoint, and the two runs' losses and final weights agree
within a tolerance (they differ only in the order floating-point gradients are summed).
Exits non-zero on any failure. Run from anywhere: `python .ci/check_ddp.py`.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

STEPS, BATCH = 12, 16
LOSS_RTOL, WEIGHT_ATOL = 1e-4, 1e-5


def build_model(kind):
    import torch
    if kind == 'transfusion':
        from transfusion_nb.digits import digits_model
        return digits_model(dim=32, depth=2, heads=2, dim_head=16)
    from torch import nn
    class Toy(nn.Module):  # a stand-in with the same interface, for when the model is unavailable
        def __init__(self):
            super().__init__()
            self.read = nn.Sequential(nn.Linear(64, 32), nn.SiLU(), nn.Linear(32, 12))
            self.flow = nn.Sequential(nn.Linear(65 + 12, 64), nn.SiLU(), nn.Linear(64, 64))
        def forward(self, samples):
            from collections import namedtuple
            tok = torch.stack([next(t for t in s if t.dtype == torch.long)[0] for s in samples])
            x1 = torch.stack([next(t for t in s if t.is_floating_point()) for s in samples]).flatten(1)
            text = nn.functional.cross_entropy(self.read(x1), tok)
            t, x0 = torch.rand(len(x1), 1), torch.randn_like(x1)
            v = self.flow(torch.cat([t * x1 + (1 - t) * x0, nn.functional.one_hot(tok, 12).float(), t], -1))
            image = nn.functional.mse_loss(v, x1 - x0)
            return namedtuple('Out', 'loss text image')(text + image, text, image)
    return Toy()


def worker(args):
    import torch, torch.distributed as dist
    torch.set_num_threads(1)
    from transfusion_nb.utils import seed_everything
    from transfusion_nb.data import digits_datasets
    from transfusion_nb.training import Trainer, TrainConfig, init_distributed, close_distributed, leave_torchrun
    rank, world, device = init_distributed()
    seed_everything(rank + 100)  # different on purpose: DDP must broadcast process 0's initial weights
    model = build_model(args.model)
    train_ds, _ = digits_datasets()
    cfg = TrainConfig(steps=STEPS, batch_size=BATCH, micro_batches=args.micro_batches, lr=3e-3, warmup_steps=3, progress=False)
    t0 = time.time()
    trainer = Trainer(model, train_ds, cfg, out_dir=args.out)
    if args.sabotage: trainer.net = trainer.model  # no DDP wrapper: gradients are not averaged, the check must fail
    trainer.fit()
    trainer.save()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    if world > 1:
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        rank_diff = max((g - gathered[0]).abs().max().item() for g in gathered)
    else: rank_diff = 0.
    if rank == 0:
        torch.save(flat, Path(args.out) / 'weights.pt')
        (Path(args.out) / 'result.json').write_text(json.dumps({
            'world': world, 'micro_batches': args.micro_batches, 'rank_weight_diff': rank_diff,
            'losses': [h['loss'] for h in trainer.history], 'seconds': time.time() - t0}))
    close_distributed()
    leave_torchrun(0)  # the results are written: skip Python's teardown, where gloo's threads can abort the process


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--micro-batches', type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    p.add_argument('--sabotage', action='store_true', help='train without gradient averaging, to see the check fail')
    p.add_argument('--model', choices=['transfusion', 'toy'], default='transfusion', help='the model to train (default: %(default)s)')
    args = p.parse_args()
    if args.worker: return worker(args)

    import torch
    root = str(Path(__file__).resolve().parent.parent)  # the repository: import transfusion_nb from here, installed or not
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([root] + [q for q in os.environ.get('PYTHONPATH', '').split(os.pathsep) if q]))
    tmp = Path(tempfile.mkdtemp(prefix='check_ddp_'))
    runs = {'2 processes x 1 micro-batch': (['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'], 1, tmp / 'ddp'),
            '1 process x 2 micro-batches': ([], 2, tmp / 'single')}
    res, failures = {}, []
    print(f'check_ddp: {STEPS} steps, global batch {BATCH}, model {args.model}, gloo on CPU')
    for name, (launcher, micro, out) in runs.items():
        out.mkdir()
        cmd = [sys.executable, *launcher, __file__, '--worker', '--model', args.model, '--micro-batches', str(micro), '--out', str(out)]
        if args.sabotage: cmd.append('--sabotage')
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not (out / 'result.json').exists():
            print(f'FAILED to run {name} (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
            return 1
        res[name] = json.loads((out / 'result.json').read_text())
        res[name]['weights'] = torch.load(out / 'weights.pt')
        ckpts = sorted(q.name for q in out.iterdir() if q.suffix == '.pt' and q.name != 'weights.pt')
        strays = [q.name for q in out.iterdir() if q.name.endswith('.tmp')]
        print(f'  ran {name} in {time.time() - t0:.1f} s; checkpoint files: {ckpts}, temporary files left: {strays}')
        if ckpts != ['checkpoint.pt'] or strays: failures.append(f'{name}: expected exactly one checkpoint.pt and no temporary file')
        step = torch.load(out / 'checkpoint.pt', weights_only=True)['step']
        if step != STEPS: failures.append(f'{name}: the checkpoint holds step {step}, expected {STEPS}')

    ddp, single = res['2 processes x 1 micro-batch'], res['1 process x 2 micro-batches']
    d = ddp['rank_weight_diff']
    print(f'  weights of rank 0 vs rank 1 after {STEPS} steps: max |difference| = {d:.3g} (required: 0)')
    if d != 0: failures.append(f'the two processes ended with different weights (max difference {d:.3g})')
    print('  step  loss (2 processes)  loss (1 process)  relative difference')
    worst = 0.
    for k, (a, b) in enumerate(zip(ddp['losses'], single['losses'])):
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        print(f'  {k + 1:4d}  {a:18.7f}  {b:16.7f}  {rel:19.2e}')
    if len(ddp['losses']) != STEPS or len(single['losses']) != STEPS: failures.append('a run logged the wrong number of steps')
    print(f'  largest relative loss difference: {worst:.2e} (tolerance {LOSS_RTOL:g})')
    if not worst <= LOSS_RTOL: failures.append(f'losses differ by up to {worst:.2e} (relative), more than {LOSS_RTOL:g}')
    wd = (ddp['weights'] - single['weights']).abs().max().item()
    print(f'  final weights, 2 processes vs 1 process: max |difference| = {wd:.3g} (tolerance {WEIGHT_ATOL:g})')
    if not wd <= WEIGHT_ATOL: failures.append(f'final weights differ by up to {wd:.3g}, more than {WEIGHT_ATOL:g}')
    if failures:
        print('check_ddp FAILED:\n  ' + '\n  '.join(failures))
        return 1
    print('check_ddp passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
