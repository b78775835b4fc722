"""Parameters on disk: JAX pytrees (parameters, optimizer state, keys) in HDF5, one format for every use.

**The format.** A pytree is a group of datasets ``00000, 00001, ...``, its leaves in ``jax.tree_util``
flattening order; the structure comes back from a template tree of the same model (:func:`from_leaves` checks the
number of leaves and every shape). It is used in two places:

- *training checkpoints* (:func:`save` / :func:`load`, OLRG and flow training): one group per named pytree, which
  also records the tree structure (``treedef``, ``n_leaves``) so that a checkpoint is only ever loaded into a
  pytree of the same shape;
- *task results* that carry trained parameters (the ``params`` group of a flow or OLRG training task in the
  study file): :func:`leaves` gives the mapping a task returns, :func:`from_leaves` reads it back.

In a checkpoint file, scalars (step, seed) and metadata are attributes. Files are written through
:func:`olrg_hpc.store.atomic_h5`: a crash mid-write leaves the previous checkpoint intact. Every leaf carries its
checksum and the file root a digest over everything (:func:`olrg_hpc.store.seal`); :func:`load` verifies them and
raises :class:`olrg_hpc.store.CorruptFile` for a checkpoint that fails, so training restarts from a damaged file
only by the caller's choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import h5py
import jax
import numpy as np

from olrg_hpc.store import CorruptFile, atomic_h5, put, seal, verify


def leaf_name(i: int) -> str:
    """The dataset name of leaf ``i``: ``00000``, ``00001``, ..."""
    return f"{i:05d}"


def leaves(tree: Any) -> dict[str, np.ndarray]:
    """The leaves of ``tree`` as ``{"00000": array, ...}`` on the host: the form a task returns its trained
    parameters in (a group of the study file, read back with :func:`from_leaves`)."""
    return {leaf_name(i): np.asarray(jax.device_get(leaf)) for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def from_leaves(stored: Mapping[str, Any], like: Any) -> Any:
    """The pytree ``like`` with its leaves replaced by ``stored`` (written by :func:`leaves` or :func:`write_pytree`),
    each cast to the dtype of ``like``'s leaf; ValueError naming the first leaf whose count or shape differs."""
    template, treedef = jax.tree_util.tree_flatten(like)
    return jax.tree_util.tree_unflatten(treedef, _checked(stored, template))


def _checked(stored: Mapping[str, Any], template: list[Any]) -> list[np.ndarray]:
    if len(stored) != len(template):
        raise ValueError(f"stored parameters have {len(stored)} leaves, the model has {len(template)}")
    out = []
    for i, leaf in enumerate(template):
        name = leaf_name(i)
        if name not in stored:
            raise ValueError(f"stored parameters have no leaf {name}")
        arr = np.asarray(stored[name])
        if arr.shape != np.shape(leaf):
            raise ValueError(f"stored leaf {name} has shape {arr.shape}, the model's has {np.shape(leaf)}")
        out.append(arr.astype(np.asarray(leaf).dtype, copy=False))
    return out


def write_pytree(group: h5py.Group, tree: Any) -> None:
    """Store the leaves of ``tree`` (typed PRNG keys as their raw key data) and its structure."""
    flat, treedef = jax.tree_util.tree_flatten(tree)
    group.attrs["treedef"] = str(treedef)
    group.attrs["n_leaves"] = len(flat)
    for i, leaf in enumerate(flat):
        if _is_key(leaf):
            group.attrs[f"{leaf_name(i)}_key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        put(group, leaf_name(i), np.asarray(jax.device_get(leaf)))


def read_pytree(group: h5py.Group, like: Any) -> Any:
    """Leaves read back into the structure of ``like`` (ValueError if the structures differ)."""
    flat, treedef = jax.tree_util.tree_flatten(like)
    if int(group.attrs["n_leaves"]) != len(flat) or str(group.attrs["treedef"]) != str(treedef):
        raise ValueError(f"checkpoint group {group.name}: tree structure does not match the model")
    stored = {leaf_name(i): group[leaf_name(i)][()] for i in range(len(flat))}
    # typed keys are stored as their key data: checked against the template's key data, then wrapped again
    plain = [jax.random.key_data(leaf) if _is_key(leaf) else leaf for leaf in flat]
    try:
        out: list[Any] = _checked(stored, plain)
    except ValueError as exc:
        raise ValueError(f"checkpoint group {group.name}: {exc}") from None
    for i, leaf in enumerate(flat):
        if _is_key(leaf):
            out[i] = jax.random.wrap_key_data(out[i], impl=str(group.attrs[f"{leaf_name(i)}_key_impl"]))
    return jax.tree_util.tree_unflatten(treedef, out)


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


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
