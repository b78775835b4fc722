"""Devices, meshes and multi-process JAX: the one place that decides how training sees the hardware.

- ``init_distributed()``: under ``srun`` with several tasks, ``jax.distributed.initialize()`` (it reads
  the coordinator, process count and id from SLURM), with gloo collectives on CPU; one process per GPU on
  a GPU cluster (JAX's default ``local_device_ids`` under SLURM). A no-op for a single process.
- ``data_mesh()``: a 1-D mesh named ``data`` over every device of every process (GPUs when present,
  emulated CPU devices otherwise: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``), or over a
  chosen subset. Training code shards its batch over ``data`` and replicates parameters.
- ``replicate(tree, mesh)``: parameters and other replicated inputs placed on a mesh, also one that spans
  several processes (where ``jax.device_put`` refuses non-addressable devices).
- ``python -m olrg_hpc.sharding --check``: a global reduction over all processes and devices, printed by
  process 0; the multi-node template ``slurm/jax_multinode.sbatch`` runs it first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def slurm_tasks() -> int:
    """Number of tasks of the enclosing ``srun`` step (1 outside SLURM or in a bare sbatch script)."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))


def init_distributed(coordinator: str | None = None, num_processes: int = 1,
                     process_id: int = 0) -> tuple[int, int]:
    """Initialise multi-process JAX when running as several srun tasks (SLURM's environment says who is who), or
    as process ``process_id`` of ``num_processes`` with the coordinator at ``coordinator`` (``host:port``; how
    :mod:`olrg_hpc.launch` starts a task's processes); returns (process index, count)."""
    import jax

    if coordinator is not None or slurm_tasks() > 1:
        # devices must not be touched before initialize(); gloo only concerns the CPU backend, so it is
        # harmless on GPU nodes and required for cross-process collectives on CPU
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if coordinator is not None:
            jax.distributed.initialize(coordinator, num_processes, process_id)
        else:
            jax.distributed.initialize()
    return jax.process_index(), jax.process_count()


def data_mesh(axis: str = "data", devices: Sequence[Any] | int | None = None) -> Any:
    """A 1-D mesh (Auto axis type: GSPMD-style sharding via NamedSharding) over ``devices``: all global
    devices (default), the first ``n`` of them (an int), or the given list."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    if devices is None:
        devs = jax.devices()
    elif isinstance(devices, int):
        devs = jax.devices()[:devices]
    else:
        devs = list(devices)
    return Mesh(np.array(devs), (axis,))


def replicate(tree: Any, mesh: Any) -> Any:
    """Every leaf of ``tree`` replicated over ``mesh``. Within one process this is ``jax.device_put``; over a
    mesh that spans other processes (``jax.distributed``) each process contributes its own copy, so the
    values must be the same on every process (deterministic initialisation, same seed)."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec())
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x: Any) -> Any:
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def device_summary() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "global_devices": len(devs),
            "platform": devs[0].platform, "device_kind": devs[0].device_kind}


def global_sum_check() -> float:
    """Sum of 0..n-1 over an array sharded across every device of every process (exact answer n(n-1)/2)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = data_mesh()
    n = 64 * len(jax.devices())
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    full = np.arange(n, dtype=np.float32)
    arr = jax.make_array_from_callback((n,), sharding, lambda idx: full[idx])
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(arr)
    return float(total)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m olrg_hpc.sharding", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="run the global-reduction check and print it")
    args = ap.parse_args(argv)
    idx, count = init_distributed()
    info = device_summary()
    if args.check:
        import jax

        total = global_sum_check()
        n = 64 * len(jax.devices())
        ok = total == n * (n - 1) / 2
        print(f"process {idx}/{count}: {info['local_devices']} local of {info['global_devices']} global "
              f"{info['platform']} devices; global sum {total:.0f} ({'ok' if ok else 'WRONG'})", flush=True)
        return 0 if ok else 1
    print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
