"""``fedopt channel check``: the closed form (15) against a PPP Monte-Carlo simulation."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ..config import SystemConfig, load_yaml, parse_overrides
from ..errors import ConfigError
from ._types import float_list, fraction_list, integer, list_of, number, output_dir, seed, writing

# physically sensible ranges, checked when the command line is parsed (argparse, exit 2)
D_RANGE = (1e-3, 1e5)  # distances [m]; each also >= the config's d_min (checked before the draws)
P_RANGE = (1e-9, 1e3)  # transmit powers [W]
TOL_RANGE = (1e-6, 0.5)  # PPP truncation error bound on q
MAX_DRAWS = 10**7
MAX_SAMPLES = 2 * 10**8  # grid points x draws: the (points, draws) fade array, 1.6 GB at most
MAX_POINTS = 200_000  # interferers a draw (fedopt.channel.sample_interference's max_points)
_distances = list_of(float_list, number(*D_RANGE, name="distance"), name="list of distances")
_powers = list_of(float_list, number(*P_RANGE, name="power"), name="list of powers")


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = sub.add_parser("check", help="closed form (15) vs Monte Carlo over a (d, p, b) grid")
    c.add_argument("--config", help="YAML system config (default: MODEL.md's defaults)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (units accepted: N0=-160dBm/Hz, P_max=23dBm)")
    c.add_argument("--d", type=_distances, default=[20.0, 40.0, 60.0, 80.0],
                   help=f"distances [m], each in [d_min, {D_RANGE[1]:g}]")
    c.add_argument("--p", type=_powers, default=[0.1, 0.2],
                   help=f"powers [W], each in [{P_RANGE[0]:g}, {P_RANGE[1]:g}]")
    c.add_argument("--b", type=fraction_list, default=[0.05, 0.3, 1.0],
                   help="bandwidth fractions in (0, 1]")
    c.add_argument("--draws", type=integer(100, MAX_DRAWS, name="draws"), default=30_000,
                   help=f"Monte-Carlo draws, in [100, {MAX_DRAWS:g}] (default 30000)")
    c.add_argument("--tol", type=number(*TOL_RANGE, name="tolerance"), default=1e-4,
                   help=f"PPP truncation error bound on q, in [{TOL_RANGE[0]:g}, {TOL_RANGE[1]:g}] "
                        "(default 1e-4)")
    c.add_argument("--seed", type=seed, default=0)
    c.add_argument("--out", type=output_dir, default="results/channel",
                   help="folder for the CSV, JSON and PNG")
    c.add_argument("--no-plot", action="store_true")


def _check_grid(cfg: SystemConfig, d: np.ndarray, p: np.ndarray, args) -> None:
    """What the simulator would refuse, refused before the draws start: distances closer
    than d_min, a grid too large for memory, an interferer disc beyond MAX_POINTS a draw."""
    from ..channel import truncation_radius

    if d.min() < cfg.d_min:
        raise ConfigError(f"--d: {d.min():g} m is closer than d_min = {cfg.d_min:g} m")
    if d.size * args.draws > MAX_SAMPLES:
        raise ConfigError(f"--draws: {args.draws} draws x {d.size} grid points exceeds "
                          f"{MAX_SAMPLES:g} samples; use fewer draws or grid points")
    with np.errstate(all="ignore"):
        try:
            radius = truncation_radius(cfg, d, p, args.tol)
            mean = math.pi * cfg.gnb_density * radius**2
        except (OverflowError, ZeroDivisionError):
            radius = mean = math.inf
    if not (math.isfinite(radius) and radius > 0 and mean + 8 * math.sqrt(mean) + 16 <= MAX_POINTS):
        raise ConfigError(
            f"--d/--p/--tol: the PPP disc for d up to {d.max():g} m, p down to {p.min():g} W and "
            f"tol {args.tol:g} needs ~{mean:.3g} interferers a draw (at most {MAX_POINTS}); "
            "use closer UEs, higher powers or a larger --tol")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..channel import monte_carlo_success, success_probability

    data = load_yaml(args.config) if args.config is not None else {}
    cfg = SystemConfig.from_dict({**data, **parse_overrides(args.set)})
    d, p, b = (g.ravel() for g in np.meshgrid(args.d, args.p, args.b, indexing="ij"))
    _check_grid(cfg, d, p, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with tqdm(total=args.draws, desc="PPP interference draws", unit="draw") as bar:
        try:
            res = monte_carlo_success(cfg, d, p, b, args.draws, args.seed, args.tol,
                                      progress=bar.update)
        except ValueError as exc:
            raise ConfigError(f"--d/--p/--tol: {exc}") from None
    delta = res.q - res.closed_form
    lines = [
        f"PPP disc radius {res.radius:,.0f} m (truncation moves q by < {args.tol:g}), "
        f"{args.draws} draws, N0 = {10 * math.log10(cfg.N0 * 1e3):.1f} dBm/Hz, alpha = {cfg.alpha:g}",
        f"{'d [m]':>7} {'p [W]':>7} {'b':>6} {'q (15)':>8} {'q MC':>8} {'s.e.':>7} {'diff':>8} {'z':>6}",
    ]
    for i in range(d.size):
        lines.append(
            f"{d[i]:7.1f} {p[i]:7.3f} {b[i]:6.3f} {res.closed_form[i]:8.4f} {res.q[i]:8.4f} "
            f"{res.se[i]:7.4f} {delta[i]:+8.4f} {delta[i] / max(res.se[i], 1e-12):+6.2f}"
        )
    lines.append(f"max |diff| = {np.max(np.abs(delta)):.4f}, max s.e. = {np.max(res.se):.4f}")
    print("\n".join(lines))
    header = "d,p,b,q_closed_form,q_monte_carlo,standard_error"
    with writing(out / "channel_check.csv"):
        np.savetxt(out / "channel_check.csv", np.c_[d, p, b, res.closed_form, res.q, res.se],
                   delimiter=",", header=header, comments="", fmt="%.6g")
    with writing(out / "channel_check.json"):
        (out / "channel_check.json").write_text(json.dumps({
            "max_abs_diff": float(np.max(np.abs(delta))), "max_se": float(np.max(res.se)),
            "radius_m": res.radius, "draws": args.draws, "config": cfg.to_dict()}, indent=1))
    if not args.no_plot:
        with writing(out / "channel_check.png"):
            _plot(cfg, res, out / "channel_check.png", success_probability)
    print(f"wrote {out / 'channel_check.csv'}" + ("" if args.no_plot else f" and {out / 'channel_check.png'}"))
    return 0


def _plot(cfg, res, path: Path, q_fn) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = np.unique(res.b)
    fig, axes = plt.subplots(1, len(bs), figsize=(4.2 * len(bs), 3.6), sharey=True, squeeze=False)
    p_line = np.geomspace(min(res.p.min(), cfg.P_min), max(res.p.max(), cfg.P_max), 200)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, bv in zip(axes[0], bs):
        for i, dv in enumerate(np.unique(res.d)):
            col = colors[i % len(colors)]
            ax.plot(p_line, q_fn(cfg, dv, p_line, bv), color=col, label=f"d = {dv:g} m")
            sel = (res.d == dv) & (res.b == bv)
            ax.errorbar(res.p[sel], res.q[sel], yerr=2 * res.se[sel], fmt="o", color=col, ms=4)
        ax.set_xscale("log")
        ax.set_xlabel("transmit power p [W]")
        ax.set_title(f"b = {bv:g}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("success probability q")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Eq. (15), lines; Monte Carlo with PPP interferers, points (±2 s.e.)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
