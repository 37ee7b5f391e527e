"""Performance harness (issue #7): our SFT/DPO loop vs TRL's trainers, FFT vs LoRA, evaluation and
generation speed, the machine's matmul peak and model FLOP utilisation, in one run.

    python benchmarks/run.py --data-dir ../shared/data            # full run (see docs/performance.md)
    python benchmarks/run.py --data-dir ../shared/data --quick    # smoke of every code path
    python benchmarks/run.py --list                               # case names, for --only

Each case runs in a fresh interpreter with the same thread count; results go to a JSON file, the
tables to stdout, and (full runs) docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from harness import (Settings, all_cases, docs_page, estimate_seconds, fmt, peak_gflops,  # noqa: E402
                     report_lines, select_cases)

PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SFTDPO_DATA_DIR", str(REPO.parent / "shared" / "data")),
                    help="the data directory (default: $SFTDPO_DATA_DIR, else ../shared/data)")
    ap.add_argument("--model", default=None,
                    help="model of the training and eval cases (default builtin:mini; --quick: builtin:tiny)")
    ap.add_argument("--quick", action="store_true", help="a fast smoke of every code path (tiny sizes)")
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median reported)")
    ap.add_argument("--only", action="append", default=None,
                    help="run only these cases: a group (peak, train, scaling, eval), a name prefix or a "
                         "glob; repeatable or comma-separated (see --list)")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's cases (automatic when trl is missing)")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<date>-<full|quick>.json)")
    ap.add_argument("--docs", default=None,
                    help="markdown page to rewrite (default: docs/performance.md on full runs, none with "
                         "--quick or --only); 'none' to skip")
    ap.add_argument("--fast-kernels", choices=("auto", "on", "off"), default="auto",
                    help="fused GELU (sftdpo.params.use_fast_kernels) on our side: auto = as our model loader "
                         "does (detected), on/off = force (to measure the lever)")
    ap.add_argument("--in-process", action="store_true",
                    help="run cases in this process (faster start; memory numbers less clean; --quick's default)")
    ap.add_argument("--isolate", action="store_true", help="with --quick: one fresh interpreter per case anyway")
    ap.add_argument("--case-timeout", type=float, default=1800, help="seconds before a case is abandoned")
    ap.add_argument("--list", action="store_true", help="list the selected cases and the time estimate, then exit")
    ap.add_argument("--worker", nargs=2, metavar=("CASE_JSON", "RESULT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only:
        args.only = [p.strip() for item in args.only for p in item.split(",") if p.strip()]
    if args.quick and not args.isolate:
        args.in_process = True
    return args


def make_settings(args) -> Settings:
    threads = args.threads or os.cpu_count() or 1
    s = Settings.quick_settings(threads) if args.quick else Settings(threads=threads)
    if args.repeats:
        s.repeats = s.scaling_repeats = args.repeats
    return s


def have_trl() -> bool:
    return importlib.util.find_spec("trl") is not None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args, s: Settings) -> dict:
    from importlib import metadata

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = f"{commit}{' (with uncommitted changes)' if dirty else ''}" if commit else "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": s.threads, "python": f"Python {platform.python_version()}", "versions": versions,
            "commit": commit, "quick": s.quick,
            "command": "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "matmul_desc": f"fp32 {s.matmul_size}x{s.matmul_size} torch.mm, best of {s.matmul_reps}"}


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.update(TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_one(case: dict, s: Settings, ctx: dict, workdir: Path, args) -> dict:
    """One case in a fresh interpreter (or in-process); a failure becomes {'error': ...}."""
    if args.in_process:
        import warnings

        from cases import run_case

        warnings.simplefilter("ignore", FutureWarning)  # TRL's defaults use names transformers 5 deprecated
        try:
            return run_case(case, s, ctx)
        except Exception as e:  # noqa: BLE001  (a failed case must not stop the run)
            return {**case, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    slug = case["name"].replace("/", "_")
    job, result, log = workdir / f"{slug}.job.json", workdir / f"{slug}.result.json", workdir / f"{slug}.log"
    job.write_text(json.dumps({"case": case, "settings": asdict(s),
                               "ctx": {k: v for k, v in ctx.items() if k != "data"}}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job), str(result)]
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(s.threads),
                                  timeout=args.case_timeout, cwd=REPO)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc == 0 and result.exists():
        return json.loads(result.read_text())
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] if log.exists() else []
    return {**case, "error": f"exit {rc}: {tail[0][:300] if tail else 'no output'} (log: {log})"}


def one_line(r: dict) -> str:
    if r.get("error"):
        return f"  {r['name']}: FAILED {r['error']}"
    if r["group"] == "peak":
        return f"  {r['name']}: {r['gflops']:.1f} GFLOP/s (median {r['gflops_median']:.1f})"
    if r["group"] == "scaling":
        return (f"  {r['name']}: {r['step_s']:.3f} s/step, training memory {fmt(r.get('train_memory_mib'), 0)} MiB "
                f"(peak RSS +{fmt(r.get('peak_rss_delta_mib'), 0)} MiB), "
                f"MFU {fmt(r.get('mfu'), 2)}  ({r['case_seconds']:.0f} s)")
    extra = f", ref precompute {r['ref_precompute_s']:.1f} s" if r.get("ref_precompute_s") else ""
    return (f"  {r['name']}: {r['throughput']:.2f} {r['unit']} (spread {r.get('spread', 0):.2f}{extra})"
            f"  ({r['case_seconds']:.0f} s)")


def engine_uses_fast_kernels(model_dir: str) -> bool:
    """Whether our loader already swaps in the fused GELU (then the random-init scaling models get it too)."""
    from transformers.activations import NewGELUActivation

    from sftdpo.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(model_dir)
    return not any(isinstance(m, NewGELUActivation) for m in model.modules())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        from cases import worker_main

        worker_main(*args.worker)
        return 0
    s = make_settings(args)
    trl = have_trl() and not args.no_trl
    cases = select_cases(all_cases(trl=trl), args.only)
    estimate = estimate_seconds(cases, s, args.in_process)
    print(f"{len(cases)} cases, {s.threads} threads{' (quick)' if s.quick else ''}; "
          f"estimated {estimate / 60:.1f} min" + ("" if trl else "; TRL cases skipped (pip install -e '.[bench]')"))
    if args.list:
        for c in cases:
            print("  " + c["name"])
        return 0
    os.environ.update({k: v for k, v in child_env(s.threads).items() if k != "PYTHONPATH"})
    import torch

    torch.set_num_threads(s.threads)
    from sftdpo.models import resolve_model

    from cases import prepare_data

    model_ref = args.model or ("builtin:tiny" if s.quick else "builtin:mini")
    start = time.perf_counter()
    needs_model = any(c["group"] != "peak" for c in cases)
    model_dir = resolve_model(model_ref, Path(args.data_dir)) if needs_model else None
    fast = engine_uses_fast_kernels(model_dir) if needs_model else False
    if args.fast_kernels != "auto":
        fast = args.fast_kernels == "on"
    meta = {**environment(args, s), "model": model_ref, "model_dir": model_dir, "settings": asdict(s),
            "engine_fast_kernels": fast, "estimate_min": round(estimate / 60)}
    with tempfile.TemporaryDirectory(prefix="sftdpo-bench-") as tmp:
        workdir = Path(tmp)
        ctx = {"model_dir": model_dir, "data_dir": str(Path(args.data_dir).resolve()), "fast_kernels": fast}
        if any(c["group"] == "train" for c in cases):
            t = time.perf_counter()
            data = prepare_data(model_dir, args.data_dir, s)
            (workdir / "data.json").write_text(json.dumps(data))
            ctx.update(data=data, data_file=str(workdir / "data.json"))
            print(f"data: {len(data['paraphrase']['pairs'])} paraphrase pairs, {len(data['sonnet']['pairs'])} "
                  f"sonnet pairs, tokenized in {time.perf_counter() - t:.1f} s")
        results = []
        for i, case in enumerate(cases, 1):
            ctx["peak"] = peak_gflops(results)
            print(f"[{i}/{len(cases)}] {case['name']} ...", flush=True)
            r = run_one(case, s, ctx, workdir, args)
            results.append(r)
            print(one_line(r), flush=True)
    # MFU of cases measured before the first peak (with --only) uses the best peak of the run
    peak = peak_gflops(results)
    for r in results:
        if r.get("mfu") is None and r.get("model_gflops_per_s") and peak:
            r["mfu"] = r["model_gflops_per_s"] / peak
    meta["elapsed_min"] = round((time.perf_counter() - start) / 60, 1)
    kind = "quick" if s.quick else "full"
    out = Path(args.out) if args.out else HERE / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print()
    print("\n".join(report_lines(results, meta)))
    print(f"results: {out}")
    docs = args.docs or (None if s.quick or args.only else str(REPO / "docs" / "performance.md"))
    if docs and docs != "none":
        Path(docs).parent.mkdir(parents=True, exist_ok=True)
        Path(docs).write_text(docs_page(results, meta))
        print(f"docs: {docs}")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
