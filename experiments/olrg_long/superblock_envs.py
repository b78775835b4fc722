"""Growth past the exact blocks by consistency in environments: a prototype outside the study.

From the exact block of ``n0`` sites (kept whole: ``D = 2**n0``), every growth step adds one site to the compressed
block (``relevant.grow_site``: the grown set ``G``, dimension ``2 D``) and trains one linear isometry map
``G -> D`` so that the compression ``G~`` reproduces ``C(t) = <Z_1 Z_2>(t)`` over ``[0, T]`` in each environment:

- ``isolated``: the block alone;
- ``first``: the block coupled by ``J`` at its open end to the exact first block;
- ``latest``: the block coupled to the previous compressed block (as in infinite-system DMRG); at the first step
  it is the exact first block, counted once;
- ``earlier``: every compressed block between the first and the latest;
- ``e<m>``: an exact chain of ``m`` sites.

A superblock ``G (x) E`` (``olrg_hpc.olrg.relevant.couple``) has the Hamiltonian ``H_G + H_E + J B_G (x) B_E``
(``B``: the boundary operator) and the state ``rho_G (x) rho_E``. The loss is the mean over environments of
``mean_t (C~(t) - C(t))^2`` (``olrg_hpc.olrg.loss.pure_curve``). The targets come from ``G`` and the compressed
blocks alone, so no exact answer beyond ``n0`` sites enters. The map starts from the
DMRG time-averaged isometry of ``G``. Printed per block: the loss, then the block's own ``C(t)`` against its exact
chain (for judging only). At the end: the grown block's ``C(t)`` against the 64-site chain (free fermions).

    python experiments/olrg_long/superblock_envs.py --envs isolated first latest --n-grow 10 --steps 300
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from olrg_hpc.jaxsetup import blas_single_thread
from olrg_hpc.olrg import loss as olrg_loss
from olrg_hpc.olrg import maps
from olrg_hpc.olrg.evaluate import block_expectation, exact_curve
from olrg_hpc.olrg.relevant import RelevantSet, couple, grow_site, initial_set
from olrg_hpc.spins.models import make_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--h", type=float, default=1.0)
    ap.add_argument("--n0", type=int, default=4, help="exact first block (D = 2**n0)")
    ap.add_argument("--n-grow", type=int, default=10, help="sites of the last grown block")
    ap.add_argument("--T", type=float, default=3.3, help="training window [0, T]")
    ap.add_argument("--tmax", type=float, default=3.0, help="judging window against the 64-site chain")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--nt", type=int, default=100, help="times on the training window")
    ap.add_argument("--envs", nargs="+", default=["isolated", "first", "latest"],
                    help="isolated, first, latest, earlier (every compressed block before the latest), "
                         "e<m> (an exact block of m sites)")
    a = ap.parse_args()

    model = make_model("tfim", a.n_grow, J=1.0, h=a.h)
    d_keep = 2**a.n0
    linear = maps.LinearIsometryMap(complex_=True, keep_state=True)
    times = np.linspace(0, a.T, a.nt)
    tj = jnp.asarray(times)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(a.lr, a.steps, 0.01)))
    block = initial_set(model, a.n0)
    blocks = {a.n0: block}
    t_start = time.perf_counter()
    with blas_single_thread():
        for n in range(a.n0, a.n_grow):
            g = jax.tree.map(jnp.asarray, grow_site(block, model))
            names: list = []
            for e in a.envs:  # at the first step, first and latest are one
                names += {"isolated": [None], "first": [a.n0], "latest": [n],
                          "earlier": list(range(a.n0 + 1, n))}.get(e, [e])
            envs = [None if m is None else jax.tree.map(jnp.asarray, blocks[m] if isinstance(m, int) else
                                                        initial_set(model, int(m[1:]), "Z0"))
                    for m in dict.fromkeys(names)]
            targets = [olrg_loss.pure_curve(g if e is None else couple(g, e, model), tj) for e in envs]
            warm = np.asarray(maps.DMRGMap(T=a.T).isometry({}, jax.tree.map(np.asarray, g), 0, None, d_keep))
            params = linear.init(jax.random.PRNGKey(0), 2 * d_keep, d_keep, 1, warm=[warm])

            def loss(params: object, g: RelevantSet = g, envs: list = envs, targets: list = targets) -> jax.Array:
                small = linear(params, g, 0, None, dim_keep=d_keep)
                total = 0.0
                for env, target in zip(envs, targets, strict=True):
                    c = olrg_loss.pure_curve(small if env is None else couple(small, env, model), tj)
                    total = total + jnp.mean((c - target) ** 2)
                return total / len(envs)

            @jax.jit
            def step(params: object, state: object, loss: object = loss) -> tuple:
                value, grad = jax.value_and_grad(loss)(params)
                updates, state = opt.update(grad, state, params)
                return optax.apply_updates(params, updates), state, value

            state, first = opt.init(params), None
            t0 = time.perf_counter()
            for _ in range(a.steps):
                params, state, value = step(params, state)
                first = float(value) if first is None else first
            block = jax.tree.map(np.asarray, linear(params, g, 0, None, dim_keep=d_keep)).replace(n=n + 1)
            blocks[n + 1] = block
            err = np.abs(block_expectation(block, times) - exact_curve(make_model("tfim", n + 1, J=1.0, h=a.h),
                                                                       n + 1, times))
            print(f"block {n + 1}: loss {first:.2e} -> {float(value):.2e} ({a.steps} steps, "
                  f"{time.perf_counter() - t0:.0f} s); C(t) against the exact {n + 1}-site chain: "
                  f"[0, T] {err.max():.2e}, [0, 1] {err[times <= 1].max():.2e}", flush=True)
    t = np.linspace(0, a.tmax, 201)
    err = np.abs(block_expectation(block, t) - exact_curve(make_model("tfim", 64, J=1.0, h=a.h), 64, t))
    for x in (1, 2, 3, 4, 6, 8, 10):
        if x <= a.tmax + 1e-9:
            print(f"[0, {x}]: max |C(t) - C_64(t)| of the {a.n_grow}-site block, D = {d_keep}, envs {a.envs}: "
                  f"{err[t <= x + 1e-9].max():.2e}")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
