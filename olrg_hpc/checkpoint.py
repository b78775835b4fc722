"""Training checkpoints: JAX pytrees (parameters, optimizer state, keys) in HDF5, written atomically.

A checkpoint file holds one group per named pytree; each leaf is a dataset ``00000, 00001, ...`` in
``jax.tree_util`` flattening order, and the group records the tree structure so that a checkpoint is
only ever loaded into a pytree of the same shape. Scalars (step, seed) and metadata are attributes.
Files are written through :func:`olrg_hpc.store.atomic_h5`: a crash mid-write leaves the previous
checkpoint intact. Every leaf carries its checksum and the file root a digest over everything
(:func:`olrg_hpc.store.seal`); :func:`load` verifies them and raises :class:`olrg_hpc.store.CorruptFile`
for a checkpoint that fails, so training restarts from a damaged file only by the caller's choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import h5py
import jax
import numpy as np

from olrg_hpc.store import CorruptFile, atomic_h5, put, seal, verify


def write_pytree(group: h5py.Group, tree: Any) -> None:
    """Store the leaves of ``tree`` (typed PRNG keys as their raw key data) and its structure."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    group.attrs["treedef"] = str(treedef)
    group.attrs["n_leaves"] = len(leaves)
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            group.attrs[f"{i:05d}_key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        put(group, f"{i:05d}", np.asarray(jax.device_get(leaf)))


def read_pytree(group: h5py.Group, like: Any) -> Any:
    """Leaves read back into the structure of ``like`` (ValueError if the structures differ)."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if int(group.attrs["n_leaves"]) != len(leaves) or str(group.attrs["treedef"]) != str(treedef):
        raise ValueError(f"checkpoint group {group.name}: tree structure does not match the model")
    out = []
    for i, leaf in enumerate(leaves):
        arr = group[f"{i:05d}"][()]
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out.append(jax.random.wrap_key_data(arr, impl=str(group.attrs[f"{i:05d}_key_impl"])))
        else:
            out.append(np.asarray(arr, dtype=np.asarray(leaf).dtype).reshape(np.shape(leaf)))
    return jax.tree_util.tree_unflatten(treedef, out)


def save(path: str | os.PathLike[str], trees: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
         arrays: Mapping[str, Any] | None = None) -> None:
    """Write named pytrees, plain arrays (e.g. loss history) and scalar attributes atomically."""
    with atomic_h5(os.fspath(path)) as f:
        for name, tree in trees.items():
            write_pytree(f.create_group(name), tree)
        for name, arr in (arrays or {}).items():
            put(f, name, np.asarray(arr))
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        seal(f)


def load(path: str | os.PathLike[str], like: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                                         dict[str, np.ndarray]]:
    """(pytrees shaped like ``like``, attributes, plain arrays) of a checkpoint written by :func:`save`, verified
    against its checksums first (:class:`~olrg_hpc.store.CorruptFile` names the path and what failed)."""
    with h5py.File(os.fspath(path), "r") as f:
        try:
            verify(f)
        except CorruptFile as exc:
            raise CorruptFile(f"checkpoint {os.fspath(path)}: {exc}") from None
        trees = {name: read_pytree(f[name], tmpl) for name, tmpl in like.items()}
        arrays = {name: f[name][()] for name in f if name not in like and isinstance(f[name], h5py.Dataset)}
        return trees, dict(f.attrs), arrays
