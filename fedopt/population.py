"""The UE population and the module set, drawn from a :class:`SystemConfig` and a seed.

Positions are uniform in the cell (annulus d_min..R), f_k ~ U[f_min, f_max], c_k ~
U[c_min, c_max], local dataset sizes |D_k| ~ U{data_min..data_max} with omega_k = |D_k| / Σ|D_j|.
Modules carry ranks r_m, upload sizes S_m (nominal or the backend's own parameter count) and
compute costs phi_m = 1 + r_m/64 (MODEL.md, "Sets, data, decisions").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .channel import interference_coefficient, noise_coefficient
from .energy import computation_energy, compute_time, min_bandwidth
from .errors import ConfigError

__all__ = ["Population", "draw_population", "uniform_disc"]


def _frozen(arr) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Population:
    """UEs (shape (K,)) and modules (shape (M,)) of one system.

    positions: (K, 2) metres from the gNB; d: (K,) distances; f: (K,) Hz; c: (K,) cycles/bit;
    n_data: (K,) local dataset sizes; omega: (K,) data weights; D: (K,) samples a round;
    ranks, S (bits), phi: (M,).
    """

    positions: np.ndarray
    f: np.ndarray
    c: np.ndarray
    n_data: np.ndarray
    omega: np.ndarray
    D: np.ndarray
    ranks: np.ndarray
    S: np.ndarray
    phi: np.ndarray

    def __post_init__(self) -> None:
        for name in ("positions", "f", "c", "n_data", "omega", "D", "ranks", "S", "phi"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def K(self) -> int:
        return int(self.f.shape[0])

    @property
    def M(self) -> int:
        return int(self.S.shape[0])

    @property
    def d(self) -> np.ndarray:
        """Distances to the gNB [m], shape (K,)."""
        return np.hypot(self.positions[:, 0], self.positions[:, 1])

    def with_positions(self, positions: np.ndarray) -> Population:
        from dataclasses import replace

        return replace(self, positions=positions)

    # pair-level quantities, shape (K, M)
    def compute_time(self, cfg) -> np.ndarray:
        return compute_time(cfg, self.phi[None, :], self.c[:, None], self.D[:, None], self.f[:, None])

    def b_min(self, cfg) -> np.ndarray:
        """Deadline floor b^min_{k,m}, (K, M); inf where the pair cannot meet T_max."""
        return min_bandwidth(cfg, self.S[None, :], self.compute_time(cfg))

    def computation_energy(self, cfg) -> np.ndarray:
        return computation_energy(cfg, self.phi[None, :], self.c[:, None], self.D[:, None], self.f[:, None])

    def a(self, cfg) -> np.ndarray:
        """a_k of (15), shape (K,)."""
        return noise_coefficient(cfg, self.d)

    def kappa(self, cfg) -> np.ndarray:
        """kappa_k of (15), shape (K,)."""
        return interference_coefficient(cfg, self.d)


def uniform_disc(rng: np.random.Generator, n: int, r_min: float, r_max: float) -> np.ndarray:
    """n points uniform in the annulus r_min <= r <= r_max, shape (n, 2)."""
    r = np.sqrt(rng.uniform(r_min**2, r_max**2, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)


def draw_population(cfg, seed: int | np.random.Generator = 0,
                    module_params: np.ndarray | None = None) -> Population:
    """Draw the UEs and modules of ``cfg``.

    ``module_params`` (M,) is the backend's parameter count per module; it sets S_m when
    ``cfg.module_size == 'backend'``. Otherwise S_m = 9216 r_m * bits_per_param (nominal).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    positions = uniform_disc(rng, cfg.K, cfg.d_min, cfg.radius)
    f = rng.uniform(cfg.f_min, cfg.f_max, cfg.K)
    c = rng.uniform(cfg.c_min, cfg.c_max, cfg.K)
    n_data = rng.integers(cfg.data_min, cfg.data_max + 1, cfg.K)
    omega = n_data / n_data.sum()
    D = np.full(cfg.K, cfg.samples_per_round, dtype=float)
    ranks = np.asarray(cfg.ranks, dtype=int)
    if cfg.module_size == "backend":
        if module_params is None:
            raise ConfigError("module_size: 'backend' needs the backend's parameter counts")
        module_params = np.asarray(module_params, dtype=float)
        if module_params.shape != (cfg.M,):
            raise ConfigError(f"module_size: backend gave {module_params.shape[0]} modules, M = {cfg.M}")
        S = module_params * cfg.bits_per_param
    else:
        S = cfg.nominal_module_bits()
    return Population(positions, f, c, n_data, omega, D, ranks, S, cfg.phi())
