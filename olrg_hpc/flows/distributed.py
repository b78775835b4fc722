"""Multi-process flow training: one JAX program over every device of every process (``jax.distributed``).

Run as several SLURM tasks (one per GPU on GPU nodes; CPU nodes may emulate devices)::

    srun -n 4 python -m olrg_hpc.flows.distributed --L 16 --beta 0.634 --lam 0.5 --steps 5000 --out flow.h5

or submit it through :func:`olrg_hpc.submit.jax_job` (``slurm/jax_multinode.sbatch``), which first checks a
global reduction. :func:`olrg_hpc.sharding.init_distributed` reads the coordinator and process ids from SLURM;
:func:`olrg_hpc.flows.train.train` then shards the batch over the global ``data`` mesh, so the gradient
all-reduce crosses processes (gloo on CPU, NCCL on GPU). Random numbers do not depend on the device layout
(``jax_threefry_partitionable``), so P processes x d devices follow the loss trajectory of one process with
P x d devices, up to the order of floating-point reductions (tests/slurm/test_flow_multiprocess.py).

Process 0 writes the result with :func:`olrg_hpc.flows.train.save_checkpoint` (parameters, optimizer state, key,
step, losses; atomic) and prints one summary line; the others write nothing. A single process (no ``srun``)
trains on its local devices, the same as :func:`~olrg_hpc.flows.train.train`.
"""

from __future__ import annotations

import argparse
import sys
import time

from olrg_hpc.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m olrg_hpc.flows.distributed", description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, required=True, help="lattice size (L x L, periodic)")
    ap.add_argument("--lam", type=float, required=True, help="quartic coupling (convention set by --m2/--beta)")
    point = ap.add_mutually_exclusive_group(required=True)
    point.add_argument("--m2", type=float, help="tutorial convention (arXiv:2101.08176)")
    point.add_argument("--beta", type=float, help="beta/lambda convention (arXiv:2310.03381)")
    ap.add_argument("--kind", choices=["z2", "tutorial"], default="tutorial")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, nargs="*", default=[8, 8])
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="global batch (a multiple of the global device count)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cosine", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sync-every", type=int, default=50)
    ap.add_argument("--out", required=True, help="HDF5 file written by process 0")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train on all global devices; process 0 saves ``args.out``. Returns a summary (every process)."""
    from olrg_hpc.sharding import init_distributed

    idx, count = init_distributed()  # before anything touches the devices

    import jax
    import jax.numpy as jnp

    from olrg_hpc.flows.model import GaussianPrior, init_flow, make_flow
    from olrg_hpc.flows.train import save_checkpoint, train
    from olrg_hpc.lattice.ensemble import action_for

    n_dev = len(jax.devices())
    if args.batch % n_dev:
        raise UserError(f"--batch {args.batch}: must be a multiple of the global device count {n_dev}")
    point = {"L": args.L, "lam": args.lam, **({"m2": args.m2} if args.m2 is not None else {"beta": args.beta})}
    action, _ = action_for(point)
    flow = make_flow({"kind": args.kind, "n_layers": args.layers, "hidden": args.hidden,
                      "kernel_size": args.kernel})
    params = init_flow(flow, args.seed, (args.L, args.L), jnp.float32)
    t0 = time.perf_counter()
    res = train(flow, GaussianPrior((args.L, args.L), "float32"), action, n_steps=args.steps,
                batch_size=args.batch, key=args.seed, params=params, lr=args.lr, cosine=args.cosine,
                sync_every=args.sync_every)
    wall = time.perf_counter() - t0
    if idx == 0:
        save_checkpoint(args.out, res.state, losses=res.losses)
    return {"process": idx, "processes": count, "devices": n_dev, "steps": args.steps,
            "first_loss": float(res.losses[0]), "last_loss": float(res.losses[-1]), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        s = run(args)
    except UserError as exc:
        print(f"olrg_hpc.flows.distributed: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out where no file (or folder for it) can be written
        print(f"olrg_hpc.flows.distributed: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if s["process"] == 0:
        print(f"process 0/{s['processes']}: {s['devices']} global devices, {s['steps']} steps, loss "
              f"{s['first_loss']:.4f} -> {s['last_loss']:.4f} in {s['wall_s']:.1f} s; wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
