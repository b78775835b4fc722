"""Domain-decomposed MPI HMC (jitted JAX per rank, halos inside the program): decomposition independence with
both transports, agreement with the single-process JAX HMC, restart, bad input, a stopped rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olrg_hpc.lattice import halo, mpi_hmc
from olrg_hpc.mpi import mpi_launcher
from olrg_hpc.store import read_shard

REPO = Path(__file__).resolve().parents[2]
L = 8
SEED = 5
N_TRAJ = 6
COMMON = ["--L", str(L), "--m2", "-4", "--lam", "8", "--seed", str(SEED), "--n-steps", "10"]


ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
#: the transports this installation has (mpi4jax is an optional extra, docs/phi4-hmc.md)
TRANSPORTS = ["callback", *(["mpi4jax"] if halo.default_transport() == "mpi4jax" else [])]


def _cmd(n: int, args: list[str]) -> list[str]:
    return [*mpi_launcher(n, use_srun=False), sys.executable, "-m", "olrg_hpc.lattice.mpi_hmc", *args]


def _launch(n: int, args: list[str]) -> None:
    out = subprocess.run(_cmd(n, args), capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """(ranks, transport) -> results; one rank sends no messages, so it has one run."""
    d = tmp_path_factory.mktemp("mpi")
    res = {}
    for n, transport in [(1, TRANSPORTS[-1]), *[(n, t) for n in (2, 4) for t in TRANSPORTS]]:
        f = d / f"r{n}-{transport}.h5"
        _launch(n, [*COMMON, "--n-traj", str(N_TRAJ), "--out", str(f), "--transport", transport])
        res[n, transport] = {**read_shard(f), "_path": f}
    res[1] = res[1, TRANSPORTS[-1]]
    return res


@pytest.mark.mpi
def test_decomposition_independent(runs: dict[Any, dict[str, np.ndarray]]) -> None:
    """1, 2 and 4 ranks, every transport: the same chain. The field is bit-identical (every site sees the same
    operations, the halos are copies); dH, accept decisions and the action agree to the rounding of the global
    sums (1e-12 absolute on |dH| <~ 10, 1e-13 relative on the action)."""
    ref = runs[1]
    assert ref["dH"].shape == (N_TRAJ,)
    assert 0 < ref["accepted"].sum() < N_TRAJ + 1
    for n in (2, 4):
        for transport in TRANSPORTS:
            got = runs[n, transport]
            np.testing.assert_array_equal(got["phi"], ref["phi"])
            np.testing.assert_allclose(got["dH"], ref["dH"], rtol=0, atol=1e-12)
            np.testing.assert_array_equal(got["accepted"], ref["accepted"])
            np.testing.assert_allclose(got["action"], ref["action"], rtol=1e-13)
    assert list(runs[4, "callback"]["dims"]) == [2, 2]


@pytest.mark.mpi
def test_small_blocks_exchange_at_every_force_evaluation(runs: dict[Any, dict[str, np.ndarray]]) -> None:
    """L = 8 on 2 and 4 ranks: blocks of 4 or 8 sites are shallower than the 12 sites a once-per-trajectory halo
    of 10 leapfrog steps needs, so these runs take the per-force exchange (the chains above are that path's)."""
    import h5py

    for n in (2, 4):
        with h5py.File(runs[n, TRANSPORTS[0]]["_path"]) as f:
            assert f.attrs["halo_depth"] == 0


#: a lattice whose blocks hold the once-per-trajectory halo: 16 x 32 or 16 x 16 sites per rank, depth 12
DEEP = ["--L", "32", "--m2", "-4", "--lam", "8", "--seed", str(SEED), "--n-steps", "10", "--n-traj", str(N_TRAJ)]


@pytest.mark.mpi
def test_one_exchange_per_trajectory_gives_the_same_chain(tmp_path: Path) -> None:
    """L = 32, 10 leapfrog steps: on 2 and 4 ranks (every transport) each trajectory extends the block by 12 sites
    of its neighbours (corners from the diagonal ones on the 2 x 2 grid) and integrates it alone. Against one
    rank and against the per-force exchange on 2 ranks: the field to 1e-14 (a few ulps of |phi| <~ 3: XLA compiles
    the extended block's arithmetic in loops of other shapes, so the last bit may differ), dH to 5e-12 (rounding
    of sums of 1024 terms of size <~ 10, summed in another order by each decomposition: 1e-12 measured), the
    same accept decisions. A wrong or missing halo row (a corner, the wrap) moves the field by O(0.1)."""
    import h5py

    def run(n: int, *extra: str) -> dict[str, Any]:
        f = tmp_path / f"r{n}{'-'.join(extra)}.h5"
        _launch(n, [*DEEP, "--out", str(f), *extra])
        with h5py.File(f) as h:
            return {**read_shard(f), "depth": int(h.attrs["halo_depth"])}

    ref = run(1)
    assert ref["depth"] == 0 and 0 < ref["accepted"].sum()
    others = [run(n, "--transport", t) for n in (2, 4) for t in TRANSPORTS]
    per_force = run(2, "--halo", "force")
    assert per_force["depth"] == 0 and all(o["depth"] == 12 for o in others)
    for got in [*others, per_force]:
        np.testing.assert_allclose(got["phi"], ref["phi"], rtol=0, atol=1e-14)
        np.testing.assert_allclose(got["dH"], ref["dH"], rtol=0, atol=5e-12)
        np.testing.assert_array_equal(got["accepted"], ref["accepted"])
        np.testing.assert_allclose(got["action"], ref["action"], rtol=1e-13)


@pytest.mark.mpi
def test_agrees_with_jax_hmc(runs: dict[Any, dict[str, np.ndarray]]) -> None:
    """Same start field, momenta and uniforms through hmc.metropolis_step (leapfrog)."""
    import jax
    import jax.numpy as jnp

    from olrg_hpc.lattice import hmc
    from olrg_hpc.lattice.phi4 import Phi4Action

    act = Phi4Action(-4.0, 8.0)
    step = jax.jit(lambda phi, p, u: hmc.metropolis_step(act, phi, p, u, 1.0, 10, "leapfrog"))
    phi = jnp.asarray(mpi_hmc.initial_field(SEED, (L, L)))
    dhs, accs = [], []
    for k in range(N_TRAJ):
        p = jnp.asarray(mpi_hmc.momentum_field(SEED, k, (L, L)))
        phi, dh, acc = step(phi, p, jnp.asarray(mpi_hmc.accept_uniform(SEED, k)))
        dhs.append(float(dh))
        accs.append(bool(acc))
    ref = runs[1]
    np.testing.assert_allclose(np.asarray(phi), ref["phi"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dhs, ref["dH"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(accs, ref["accepted"])
    np.testing.assert_allclose(ref["action"][-1], float(act.action(phi)), rtol=1e-13)


@pytest.mark.mpi
def test_restart_equals_straight_run(runs: dict[Any, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """3 trajectories on 4 ranks + HDF5 checkpoint, resumed on 2 ranks to 6 == 6 straight on 1 rank, bit for bit
    (the decomposition-independence tolerance of 1e-12 is not needed: the 1-rank chain restarted on 1 rank)."""
    import h5py

    ck = tmp_path / "ckpt.h5"
    out = tmp_path / "restart.h5"
    _launch(4, [*COMMON, "--n-traj", "3", "--checkpoint", str(ck)])
    state = mpi_hmc.read_checkpoint(str(ck))
    assert state["trajectory"] == 3 and state["phi"].shape == (L, L) and state["dH"].shape == (3,)
    with h5py.File(ck) as f:
        assert f.attrs["rng_key"] == SEED and f.attrs["dims"] == "[2, 2]" and f.attrs["complete"]
        assert "git_commit" in f.attrs["provenance"] and f.attrs["host"] and f.attrs["written"]
        assert '"n_traj": 3' in f.attrs["config"]
    _launch(2, [*COMMON, "--n-traj", str(N_TRAJ), "--checkpoint", str(ck), "--restart", "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.h5", "restart.h5"]  # no temporary files left
    with h5py.File(out) as z:
        np.testing.assert_allclose(z["phi"][()], runs[1]["phi"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(z["dH"][()], runs[1]["dH"], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(z["accepted"][()], runs[1]["accepted"])
        assert z.attrs["trajectory"] == N_TRAJ and "git_commit" in z.attrs["provenance"]
    assert mpi_hmc.read_checkpoint(str(ck))["trajectory"] == N_TRAJ
    # on one rank throughout: 3 + 3 is bit-identical to 6 straight
    ck1, out1 = tmp_path / "one.h5", tmp_path / "one_out.h5"
    _launch(1, [*COMMON, "--n-traj", "3", "--checkpoint", str(ck1)])
    _launch(1, [*COMMON, "--n-traj", str(N_TRAJ), "--checkpoint", str(ck1), "--restart", "--out", str(out1)])
    z = read_shard(out1)
    for k in ("phi", "dH", "accepted", "action", "magnetization", "phi2"):
        np.testing.assert_array_equal(z[k], runs[1][k], err_msg=k)


@pytest.mark.mpi
def test_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path: Path) -> None:
    ck = tmp_path / "ckpt.h5"
    _launch(1, [*COMMON, "--n-traj", "2", "--checkpoint", str(ck)])
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])  # a partial copy
    cmd = _cmd(2, [*COMMON, "--n-traj", "4", "--checkpoint", str(ck), "--restart"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and str(ck) in lines[0] and "Traceback" not in out.stderr, out.stderr


# ------------------------------------------------------------------ no MPI needed below
def test_rng_is_decomposition_independent() -> None:
    """A block's momenta, drawn from its global site indices, are the global field's block, exactly; streams
    differ between trajectories, seeds and purposes."""
    full = mpi_hmc.momentum_field(3, 7, (8, 12))
    y, x = np.meshgrid(np.arange(4, 8), np.arange(6, 12), indexing="ij")
    part = np.asarray(mpi_hmc.site_normals(3, 7, 1, (y * 12 + x).astype(np.uint32)))
    np.testing.assert_array_equal(part, full[4:8, 6:12])
    assert not np.allclose(mpi_hmc.momentum_field(3, 8, (8, 12)), full)
    assert not np.allclose(mpi_hmc.momentum_field(4, 7, (8, 12)), full)
    assert not np.allclose(mpi_hmc.momentum_field(3 + 2**32, 7, (8, 12)), full)  # the seed's high word counts
    assert not np.allclose(mpi_hmc.initial_field(3, (8, 12), scale=1.0), mpi_hmc.momentum_field(3, 0, (8, 12)))
    u = [mpi_hmc.accept_uniform(3, k) for k in range(50)]
    assert all(0 < x < 1 for x in u) and len(set(u)) == 50
    assert mpi_hmc.initial_field(3, (4, 4), "cold").sum() == 0


def test_rng_is_standard_normal_and_uncorrelated() -> None:
    """2^16 momenta (one trajectory of a 256^2 lattice): Kolmogorov-Smirnov against N(0, 1) (p > 1e-3: fails
    with probability 1e-3 for a correct generator, at this seed it passes or fails deterministically), mean and
    variance within 4 sigma, neighbouring sites and consecutive trajectories uncorrelated within 4 sigma
    (sigma = 1/sqrt(n) for each correlation)."""
    from scipy import stats

    z = mpi_hmc.momentum_field(11, 0, (256, 256))
    n = z.size
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    for other in (np.roll(z, 1, axis=1), np.roll(z, 1, axis=0), mpi_hmc.momentum_field(11, 1, (256, 256))):
        assert abs(np.mean(z * other)) < 4 / np.sqrt(n)
    u = np.array([mpi_hmc.accept_uniform(11, k) for k in range(2000)])
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def _history(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {"dH": rng.normal(size=n), "accepted": rng.random(n) < 0.8, "action": rng.normal(size=n),
            "magnetization": rng.normal(size=n), "phi2": rng.random(n)}


IDENT = {"m2": -4.0, "lam": 8.0, "Ly": 4, "Lx": 6, "seed": 3, "tau": 1.0, "n_steps": 10, "integrator": "leapfrog"}


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    phi = np.random.default_rng(1).normal(size=(4, 6))
    path = tmp_path / "sub" / "c.h5"
    mpi_hmc.write_checkpoint(str(path), phi, 5, IDENT, _history(5), {"config": {"L": [4, 6]}, "dims": [2, 1]})
    st = mpi_hmc.read_checkpoint(str(path))
    np.testing.assert_array_equal(st["phi"], phi)
    assert st["phi"].dtype == np.float64 and st["trajectory"] == 5 and st["identity"] == IDENT
    for k, v in _history(5).items():
        np.testing.assert_array_equal(st[k], v)
    assert [p.name for p in path.parent.iterdir()] == ["c.h5"]


def test_damaged_checkpoints_raise_one_line_user_error(tmp_path: Path) -> None:
    import h5py

    from olrg_hpc.errors import UserError

    good = tmp_path / "good.h5"
    mpi_hmc.write_checkpoint(str(good), np.zeros((4, 6)), 3, IDENT, _history(3))
    data = good.read_bytes()
    cases = {"truncated.h5": data[: len(data) // 2], "empty.h5": b"", "text.h5": b"not hdf5 at all\n"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    with h5py.File(tmp_path / "other.h5", "w") as f:  # valid HDF5, but not a checkpoint
        f["phi"] = np.zeros((4, 6))
    with h5py.File(tmp_path / "short.h5", "w") as f:  # complete-looking but inconsistent
        f.attrs.update({"format": mpi_hmc.CHECKPOINT_FORMAT, "complete": True, "trajectory": 4,
                        "identity": "{}"})
        f["phi"] = np.zeros((4, 6))
        for k, v in _history(3).items():
            f[k] = v
    for name in [*cases, "other.h5", "short.h5"]:
        with pytest.raises(UserError) as exc:
            mpi_hmc.read_checkpoint(str(tmp_path / name))
        msg = str(exc.value)
        assert str(tmp_path / name) in msg and "\n" not in msg, msg


def test_parameter_conventions_match_phi4() -> None:
    from olrg_hpc.lattice.phi4 import Phi4Action

    m2, lam, c, conv = mpi_hmc.tutorial_parameters({"beta": 0.5, "lam": 0.5})
    assert (m2, lam, c, conv) == (-4.0, 8.0, 2.0, "beta_lambda")
    for beta, lb in [(0.576, 0.5), (0.634, 0.5), (0.677, 0.3)]:
        act, scale = Phi4Action.from_beta_lambda(beta, lb)
        assert mpi_hmc.tutorial_parameters({"beta": beta, "lam": lb})[:3] == pytest.approx((act.m2, act.lam, scale))
        act_h, s_h = Phi4Action.from_hopping(beta / 2, lb)
        got = mpi_hmc.tutorial_parameters({"kappa": beta / 2, "lam": lb})
        assert got[:3] == pytest.approx((act_h.m2, act_h.lam, s_h)) and got[3] == "hopping"
    assert mpi_hmc.tutorial_parameters({"m2": 1.0, "lam": 0.0}) == (1.0, 0.0, 1.0, "tutorial")
    with pytest.raises(ValueError):
        mpi_hmc.tutorial_parameters({"m2": 1.0, "beta": 0.5, "lam": 0.1})


@pytest.mark.mpi
def test_omelyan_beta_lambda_agrees_with_jax(tmp_path: Path) -> None:
    """Omelyan on 2 ranks, action given in the beta/lambda convention, vs the JAX Omelyan integrator."""
    import jax
    import jax.numpy as jnp

    from olrg_hpc.lattice import hmc
    from olrg_hpc.lattice.phi4 import Phi4Action

    out = tmp_path / "om.h5"
    _launch(
        2,
        [
            "--L",
            "8",
            "--beta",
            "0.576",
            "--lam",
            "0.5",
            "--seed",
            "9",
            "--n-steps",
            "6",
            "--integrator",
            "omelyan",
            "--n-traj",
            "3",
            "--out",
            str(out),
        ],
    )
    act, scale = Phi4Action.from_beta_lambda(0.576, 0.5)
    step = jax.jit(lambda phi, p, u: hmc.metropolis_step(act, phi, p, u, 1.0, 6, "omelyan"))
    phi = jnp.asarray(mpi_hmc.initial_field(9, (8, 8)))
    dhs = []
    for k in range(3):
        p = jnp.asarray(mpi_hmc.momentum_field(9, k, (8, 8)))
        phi, dh, _ = step(phi, p, jnp.asarray(mpi_hmc.accept_uniform(9, k)))
        dhs.append(float(dh))
    z = read_shard(out)
    np.testing.assert_allclose(z["phi"], np.asarray(phi), rtol=0, atol=1e-12)
    np.testing.assert_allclose(z["dH"], dhs, rtol=0, atol=1e-12)
    assert float(z["field_scale"]) == pytest.approx(scale)


@pytest.mark.slow
@pytest.mark.mpi
def test_tutorial_point_ensemble_matches_jax(tmp_path: Path) -> None:
    """Same physics from both implementations: 2-rank numpy HMC (beta/lambda input beta = lam = 0.5) vs
    64 JAX chains at the tutorial point (m2, lam) = (-4, 8); <phi^2> and <|M|> agree within 4 sigma
    (Gamma-method errors, added in quadrature)."""
    import jax
    import jax.numpy as jnp

    from olrg_hpc.lattice import autocorr as ac
    from olrg_hpc.lattice import hmc
    from olrg_hpc.lattice.phi4 import Phi4Action

    out = tmp_path / "long.h5"
    _launch(2, ["--L", "8", "--beta", "0.5", "--lam", "0.5", "--seed", "4", "--n-traj", "3000", "--out", str(out)])
    z = read_shard(out)
    assert float(z["field_scale"]) == 2.0
    mpi = {"phi2": z["phi2"][100:], "absM": np.abs(z["magnetization"][100:])}
    act = Phi4Action(-4.0, 8.0)
    phi0 = 0.5 * jax.random.normal(jax.random.key(1, impl="rbg"), (64, L, L), dtype=jnp.float64)
    res = hmc.run_chain(act, phi0, 500, jax.random.key(2, impl="rbg"), n_steps=10, measure=_tut_measure, n_therm=50)
    x = np.asarray(res.measurements)
    ref = {"phi2": x[..., 0], "absM": np.abs(x[..., 1])}
    for k in ("phi2", "absM"):
        m1, e1, _ = ac.mean_error(mpi[k])
        m2, e2, _ = ac.mean_error(ref[k])
        assert abs(m1 - m2) < 4 * np.hypot(e1, e2), (k, m1, e1, m2, e2)


def _tut_measure(phi: Any) -> Any:
    import jax.numpy as jnp

    return jnp.stack([jnp.mean(phi**2, axis=(-2, -1)), jnp.mean(phi, axis=(-2, -1))], axis=-1)


# ------------------------------------------------------------------ bad input, a stopped rank
@pytest.mark.mpi
@pytest.mark.parametrize("args, says", [
    (["--L", "8", "--m2", "nan", "--lam", "8"], "m2: Input should be a finite number (got nan)"),
    (["--L", "8", "--m2", "-4", "--lam", "inf"], "lam: Input should be a finite number (got inf)"),
    (["--L", "8", "--m2", "-4", "--lam", "8", "--dims", "0", "1"], "dims.0: Input should be greater than or equal"),
    (["--L", "8", "--m2", "-4", "--lam", "8", "--dims", "-1", "2"], "dims.0: Input should be greater than or equal"),
    (["--L", "8", "--m2", "-4", "--lam", "8", "--dims", "1", "1"], "dims [1, 1] hold 1 ranks, but 2 are running"),
    (["--L", "9", "--m2", "-4", "--lam", "8", "--dims", "2", "1"], "dims [2, 1] must divide the lattice [9, 9]"),
    (["--L", "8", "--m2", "-4", "--lam", "8", "--n-steps", "0"], "n_steps: Input should be greater than or equal"),
    (["--L", "8", "--m2", "-4", "--lam", "8", "--integrator", "verlet"], "integrator: Input should be 'leapfrog'"),
], ids=["nan-m2", "inf-lam", "dims-0", "dims-negative", "dims-too-few", "indivisible", "n-steps", "integrator"])
def test_bad_input_is_one_line_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    """The spec's checks (all but the grid that does not fit the ranks, which MPI finds) before MPI starts."""
    out = subprocess.run(_cmd(2, [*args, "--seed", "1", "--n-traj", "2", "--out", str(tmp_path / "o.h5")]),
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("mpi_hmc: error:"), out.stderr
    assert not (tmp_path / "o.h5").exists()


def _rank_pid(tag: str, rank: int) -> int | None:
    """Process id of MPI rank ``rank`` of the run whose environment carries ``OLRG_TEST_TAG=tag``."""
    want = {f"OLRG_TEST_TAG={tag}".encode(), f"PMI_RANK={rank}".encode()}
    for d in Path("/proc").iterdir():
        try:
            env = set((d / "environ").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue
        if want <= env and b"mpi_hmc" in (d / "cmdline").read_bytes():
            return int(d.name)
    return None


@pytest.mark.mpi
def test_stopped_rank_ends_the_run_within_the_watchdog_bound(tmp_path: Path) -> None:
    """SIGSTOP rank 1 of a 2-rank run in progress: rank 0 waits inside MPI, its watchdog (5 s past the expected
    segment time, milliseconds here) prints one line and exits 3, and mpiexec ends the stopped rank. The bound
    is 5 s + the 0.2 s poll + the launcher's cleanup; 60 s allows for a loaded machine, a hang would take
    the 300 s subprocess timeout and fail."""
    tag = uuid.uuid4().hex
    ck = tmp_path / "ck.h5"
    cmd = _cmd(2, ["--L", "32", "--m2", "-4", "--lam", "8", "--seed", "1", "--n-traj", "1000000", "--checkpoint",
                   str(ck), "--checkpoint-every", "20", "--watchdog-s", "5"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "OLRG_TEST_TAG": tag}, cwd=REPO)
    pid = None
    try:
        for _ in range(600):  # wait for the first checkpoint: the run is past compilation, in its loop
            if ck.exists() or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert ck.exists() and proc.poll() is None, proc.communicate()
        pid = _rank_pid(tag, 1)
        assert pid is not None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        _, err = proc.communicate(timeout=300)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "rank 0: no progress for 5 s" in lines[0], err
    assert elapsed < 60, elapsed
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
