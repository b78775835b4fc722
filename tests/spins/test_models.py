"""Conventions, block-growth interface and conversions of olrg_hpc.spins.models.

Every Hamiltonian is compared with an independent dense build (``_spins_ref``: numpy.kron of the
documented formula). Tolerance 1e-12: entries are sums of at most ~20 O(1) products, so round-off is
~1e-15; 1e-12 leaves room without hiding a wrong coefficient (those are O(0.1) or larger).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _spins_ref import PX, PY, PZ, chain, op_at

from olrg_hpc.spins import ed, models
from olrg_hpc.spins.models import SM, SP, SZ, X, Y, Z

ATOL = 1e-12


def test_pauli_conventions():
    up = np.array([1.0, 0.0])
    np.testing.assert_allclose(Z @ up, up)  # |0> is Z = +1
    np.testing.assert_allclose(X @ Y, 1j * Z)
    np.testing.assert_allclose(SP, (X + 1j * Y) / 2)
    np.testing.assert_allclose(SM, SP.conj().T)
    np.testing.assert_allclose(SP @ np.array([0.0, 1.0]), up)  # S^+ raises |1> to |0>
    np.testing.assert_allclose(SZ, Z / 2)


def _reference(model: models.ChainModel) -> np.ndarray:
    p, n = model.params, model.n
    if model.name == "tfim":
        return chain(n, [(p["J"], PZ, PZ)], [(p["h"], PX)])
    if model.name == "mixed_field_ising":
        return chain(n, [(p["J"], PZ, PZ)], [(p["h"], PX), (p["g"], PZ)])
    # XXZ written with S^x, S^y (complex) rather than S^+-, independent of the model's decomposition
    S = [PX / 2, PY / 2, PZ / 2]
    J, d = p["J"], p["delta"]
    return chain(n, [(J, S[0], S[0]), (J, S[1], S[1]), (J * d, S[2], S[2])], [(p["hz"], S[2])])


MODELS = [
    models.tfim(6, J=1.0, h=0.7),
    models.tfim(5, J=-0.8, h=1.3),
    models.mixed_field_ising(6, J=1.0, h=0.9, g=0.4),
    models.xxz(6, J=1.2, delta=0.6, hz=0.3),
    models.heisenberg(5, J=1.0),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-{m.n}")
def test_hamiltonian_matches_documented_formula(model):
    np.testing.assert_allclose(ed.dense_hamiltonian(model), _reference(model), atol=ATOL)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-{m.n}")
def test_block_growth_reproduces_hamiltonian(model):
    """H_{n+1} = H_n (x) I + sum_k c_k B^k (x) E^k + I (x) h_site with B^k on the block's last site."""
    hs = model.site_term()
    H = hs.astype(complex)
    for _ in range(1, model.n):
        D = H.shape[0]
        Hn = np.kron(H, np.eye(2)) + np.kron(np.eye(D), hs)
        for c, left, right in model.bond_terms():
            B = np.kron(np.eye(D // 2), left)  # B^k acting on the last site of the m-site block
            Hn += c * np.kron(B, right)
        H = Hn
    np.testing.assert_allclose(H, _reference(model), atol=ATOL)
    # the bond operators on the block side are boundary operators or their adjoints
    allowed = [models.OPERATORS[b] for b in model.boundary_ops()]
    allowed += [a.conj().T for a in allowed]
    for _, left, _ in model.bond_terms():
        assert any(np.array_equal(left, a) for a in allowed)


def test_xxz_boundary_coupling_form():
    """XXZ bond = C_z (x) S^z + (C_+ (x) S^- + h.c.)/2 with C_z = J delta S^z, C_+ = J S^+ (docs/conventions.md)."""
    J, delta = 0.9, 0.4
    m = models.xxz(2, J=J, delta=delta)
    bond = sum(c * np.kron(a, b) for c, a, b in m.bond_terms())
    Cz, Cp = J * delta * SZ, J * SP
    expected = np.kron(Cz, SZ) + (np.kron(Cp, SM) + np.kron(Cp, SM).conj().T) / 2
    np.testing.assert_allclose(bond, expected, atol=ATOL)
    assert m.boundary_ops() == ("Sz", "Sp")


def test_heisenberg_two_sites_singlet_energy():
    # exact: J S1.S2 has the singlet at -3J/4 and the triplet at +J/4
    w = np.linalg.eigvalsh(ed.dense_hamiltonian(models.heisenberg(2, J=2.0)))
    np.testing.assert_allclose(w, [-1.5, 0.5, 0.5, 0.5], atol=ATOL)


def test_xxz_conserves_total_sz():
    m = models.xxz(6, J=1.0, delta=0.3, hz=0.5)
    H = ed.dense_hamiltonian(m)
    Sz = sum(op_at({i: PZ / 2}, 6) for i in range(6))
    np.testing.assert_allclose(H @ Sz - Sz @ H, 0, atol=ATOL)


def test_make_model_and_dataclass():
    m = models.make_model("tfim", 8, J=1.0, h=0.5)
    assert m == models.tfim(8, 1.0, 0.5)
    assert m.params == {"J": 1.0, "h": 0.5} and m["h"] == 0.5
    assert hash(m) == hash(models.tfim(8, 1.0, 0.5))
    assert pickle.loads(pickle.dumps(m)) == m
    assert models.make_model("Heisenberg", 4) == models.xxz(4, delta=1.0)
    assert models.make_model("mfi", 4, g=0.2).name == "mixed_field_ising"
    assert m.with_n(3).n == 3
    with pytest.raises(AttributeError):
        m.n = 3  # frozen
    with pytest.raises(ValueError):
        models.make_model("potts", 4)
    with pytest.raises(TypeError):
        models.make_model("tfim", 4, delta=1.0)
    with pytest.raises(ValueError):
        models.tfim(0)


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(("J", "h"), [(1.0, 1.0), (1.0, 0.5), (-0.7, 1.3)])
def test_tenpy_tfi_conversion(J, h):
    n = 6
    p = models.to_tenpy_tfi(J, h)
    # TeNPy TFIChain: H = -J sum sigma^x sigma^x - g sum sigma^z (Pauli), built independently
    H_tenpy = chain(n, [(-p["J"], PX, PX)], [(-p["g"], PZ)])
    H_ours = ed.dense_hamiltonian(models.tfim(n, J, h))
    W = models.hadamard_chain(n)
    np.testing.assert_allclose(W @ H_ours @ W, H_tenpy, atol=ATOL)
    np.testing.assert_allclose(np.linalg.eigvalsh(H_ours), np.linalg.eigvalsh(H_tenpy), atol=ATOL)
    assert models.from_tenpy_tfi(**p) == {"J": J, "h": h}
    # our |0...0> is TeNPy's all-sigma^x = +1 state
    np.testing.assert_allclose(W @ ed.zero_state(n), ed.plus_state(n), atol=ATOL)


@pytest.mark.parametrize(("J", "h"), [(1.0, 1.0), (0.3, -2.0)])
def test_quimb_ising_conversion(J, h):
    n = 6
    q = models.to_quimb_ising(J, h)
    # quimb MPO_ham_ising: H = j sum Sz Sz - bx sum Sx with S = sigma/2, same basis
    H_quimb = chain(n, [(q["j"], PZ / 2, PZ / 2)], [(-q["bx"], PX / 2)])
    H_ours = ed.dense_hamiltonian(models.tfim(n, J, h))
    np.testing.assert_allclose(H_ours, H_quimb, atol=ATOL)
    assert models.from_quimb_ising(**q) == {"J": J, "h": h}


def test_model_registry_carries_each_model():
    """One ModelKind per model: positional couplings in its order, defaults for the rest, unknown or repeated
    couplings refused like a function's keywords; the on-site matrix from the named terms is h X + g Z (Ising) and
    hz S^z (XXZ), exactly; free fermions are the exact route of the TFIM alone; aliases fix their couplings; the
    configs' model names are the registry's."""
    from typing import get_args

    tfim = models.MODELS["tfim"]
    assert tfim(8, 0.7) == models.make_model("tfim", 8, J=0.7, h=1.0) and tfim.coupling_names == ("J", "h")
    m = models.mixed_field_ising(4, 1.0, 0.9, 0.4)
    np.testing.assert_array_equal(m.site_term(), 0.9 * models.X + 0.4 * models.Z)
    np.testing.assert_array_equal(models.tfim(4, h=0.3).site_term(), 0.3 * models.X)
    np.testing.assert_array_equal(models.xxz(4, hz=0.25).site_term(), 0.25 * models.SZ)
    assert m.kind is models.MODELS["mixed_field_ising"] and m.boundary_ops() == ("Z",)
    assert [k for k, v in models.MODELS.items() if v.free_fermion] == ["tfim"]
    with pytest.raises(TypeError, match="has no coupling 'g'"):
        models.tfim(4, g=0.1)
    with pytest.raises(TypeError, match="given twice"):
        models.tfim(4, 1.0, J=1.0)
    with pytest.raises(TypeError, match="heisenberg fixes delta"):
        models.make_model("heisenberg", 4, delta=0.5)
    assert get_args(models.ModelName) == tuple(models.MODELS)
    assert set(models.MODEL_NAMES) == {*models.MODELS, "ising", "tfi", "mfi", "mixed", "heisenberg"}
