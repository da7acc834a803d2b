#!/usr/bin/env python3
"""Latency against data size, from the JSON results of `bench/run` (bench/results/*.json).

For one backend, takes the newest one-process result at each dataset size and draws, per
scenario, p50 and p95 latency (ms) against the number of patients (both axes logarithmic), and
a second panel with requests/s. Writes bench/results/growth-<backend>.png and prints the table
it drew.

  python3 bench/plot.py                   # PostgreSQL
  python3 bench/plot.py --backend sqlite

Needs matplotlib; without it, installs it into a venv under target/plot-venv (PyPI) and runs
itself again there.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.path.join(ROOT, "target", "plot-venv")
    py = os.path.join(venv, "bin", "python")
    if os.environ.get("ICM_PLOT_VENV"):
        sys.exit("matplotlib could not be installed")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "matplotlib"],
                       check=True)
    os.execve(py, [py] + sys.argv, dict(os.environ, ICM_PLOT_VENV="1"))


def load(backend, folder):
    """Newest one-process result per dataset size: {patients: result}."""
    best = {}
    for path in sorted(glob.glob(os.path.join(folder, f"*-{backend}-*.json"))):
        with open(path) as f:
            r = json.load(f)
        if r.get("backend") != backend or r.get("settings", {}).get("server_env"):
            continue
        rounds = [x for x in r.get("rounds", []) if x.get("processes") == 1]
        if not rounds:
            continue
        n = r["patients"]
        if n not in best or r["started"] > best[n]["started"]:
            best[n] = dict(r, path=path, one=rounds[0])
    return dict(sorted(best.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    runs = load(a.backend, a.results)
    if len(runs) < 2:
        sys.exit(f"need results at two dataset sizes or more for {a.backend}; have {sorted(runs)}")
    ensure_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(runs)
    names = [n for n in runs[sizes[0]]["one"]["scenarios"] if all(n in runs[s]["one"]["scenarios"] for s in sizes)]
    print(f"{a.backend}: " + ", ".join(f"{s} patients ({os.path.basename(runs[s]['path'])}, "
                                       f"commit {runs[s].get('commit', '?')})" for s in sizes))
    print(f"{'scenario':28} " + " ".join(f"{f'{s:,} p50/p95 ms':>22}" for s in sizes))
    for n in names:
        cells = [runs[s]["one"]["scenarios"][n] for s in sizes]
        print(f"{n:28} " + " ".join(f"{c['p50_ms']:>10.2f} /{c['p95_ms']:>10.2f}" for c in cells))

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(15, 6.5))
    cmap = plt.get_cmap("tab20")
    for i, n in enumerate(names):
        p50 = [runs[s]["one"]["scenarios"][n]["p50_ms"] for s in sizes]
        p95 = [runs[s]["one"]["scenarios"][n]["p95_ms"] for s in sizes]
        rps = [runs[s]["one"]["scenarios"][n]["rps"] for s in sizes]
        color = cmap(i % 20)
        lat.plot(sizes, p95, marker="o", color=color, label=f"{n} p95")
        lat.plot(sizes, p50, marker=".", linestyle=":", color=color)
        thr.plot(sizes, rps, marker="o", color=color, label=n)
    for ax in (lat, thr):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("patients in the database (about 18.5 resources each)")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.grid(True, which="both", alpha=0.3)
    lat.set_ylabel("latency, ms (solid p95, dotted p50)")
    thr.set_ylabel("requests/s")
    lat.set_title("Latency against data size")
    thr.set_title("Throughput against data size")
    lat.legend(fontsize=7, loc="upper left")
    first = runs[sizes[0]]
    st = first["settings"]
    fig.suptitle(f"icm-fhir on {a.backend}, production defaults (auth and audit on), wrk -t{st['threads']} "
                 f"-c{st['connections']} -d{st['duration_s']}s, {first['machine_start'].get('cores', '?')} cores")
    fig.tight_layout()
    out = os.path.join(a.results, f"growth-{a.backend}.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
