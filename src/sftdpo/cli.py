"""The `sftdpo` command: a thin argparse front. User errors end in one line and an exit code."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import SftdpoError

log = logging.getLogger("sftdpo")
REPORT_TO = ["none", "tensorboard", "wandb", "mlflow"]


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="data directory (quora/, sonnets/, shakespeare-plays/); "
                        "default: $SFTDPO_DATA_DIR, else the per-user data dir")


class _Subparsers:
    """Adds the common options (--debug, --quiet) to every subcommand."""

    def __init__(self, action, common: argparse.ArgumentParser):
        self.action, self.common = action, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[self.common], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftdpo",
        description="Controlled SFT / DPO / SFT->DPO x full fine-tuning / LoRA studies on small causal LMs.")
    parser.add_argument("--version", action="version", version=f"sftdpo {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    common.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)

    data = sub.add_parser("data", help="check or fetch the data directory",
                          description="Check the data directory, or fetch the data where you have internet.")
    data_sub = _Subparsers(data.add_subparsers(dest="data_command", required=True, metavar="ACTION"), common)
    check = data_sub.add_parser("check", help="validate the data dir and print a summary (exit 1 if unusable)",
                                description="Validate every file of the data directory and summarise it.")
    _add_data_dir(check)
    check.set_defaults(func=cmd_data_check)
    fetch = data_sub.add_parser("fetch", help="download QQP and the sonnets into the data dir layout",
                                description="Download GLUE QQP (needs `pip install sftdpo[fetch]`) and the "
                                            "sonnets (Project Gutenberg) into DEST, in the data-dir layout.")
    fetch.add_argument("--dest", metavar="DIR", help="where to write (default: the per-user data dir)")
    fetch.set_defaults(func=cmd_data_fetch)

    backbone = sub.add_parser("backbone", help="build the built-in tokenizer + GPT-2 backbones",
                              description="Train a byte-level BPE tokenizer and pretrain a GPT-2 on the plays "
                                          "and the Quora train-split questions.")
    bb_sub = _Subparsers(backbone.add_subparsers(dest="backbone_command", required=True, metavar="ACTION"),
                         common)
    build = bb_sub.add_parser("build", help="build (or reuse from cache) a backbone",
                              description="Build a backbone; cached by a hash of its inputs, so a second "
                                          "call is instant. Prints the folder it lives in.")
    build.add_argument("--size", choices=["tiny", "mini", "small"], default="mini",
                       help="tiny: seconds, for tests; mini: ~10 min on a laptop CPU; small: GPT-2 124M shape, "
                            "for a GPU (default: mini)")
    _add_data_dir(build)
    build.add_argument("--out", metavar="DIR", help="write here instead of the cache ($SFTDPO_CACHE_DIR)")
    build.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default 0)")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_backbone_build)

    _add_train_parser(sub)
    _add_study_parser(sub)
    rep = sub.add_parser("report", help="write report.md, results.csv and plots/ of a study (also mid-study)",
                         description="Build the study report from DIR/study.sqlite and the run directories: "
                                     "the seven questions with intervals and verdicts, a table per task, costs, "
                                     "plots. Safe to run while the study is still running (marked partial).")
    rep.add_argument("dir", metavar="DIR", help="a study directory (the --out of `sftdpo study`)")
    rep.set_defaults(func=cmd_report)
    ev = sub.add_parser("eval", help="metrics of a trained run, or of any model, on a task",
                        description="Evaluate a trained run (--run) or a model (--model) on the paraphrase "
                                    "and/or sonnet task.")
    ev.add_argument("--run", metavar="RUN_DIR", help="a run directory written by `sftdpo train`")
    ev.add_argument("--model", default="builtin:mini",
                    help="without --run: builtin:tiny|mini|small, a local Hugging Face folder, or a hub name "
                         "such as gpt2 (default: builtin:mini)")
    ev.add_argument("--task", choices=["paraphrase", "sonnet", "all"], default="all", help="default: all")
    ev.add_argument("--split", choices=["dev", "test"], default="test", help="default: test")
    ev.add_argument("--eval-file", metavar="FILE", help="paraphrase: evaluate on this TSV/CSV instead")
    ev.add_argument("--prompts", metavar="FILE", help="sonnet: held-out prompt file (first 3 lines)")
    ev.add_argument("--references", metavar="FILE", help="sonnet: the true sonnets of --prompts")
    ev.add_argument("--samples", type=int, default=1, help="sonnet: sampling rounds averaged (default 1)")
    ev.add_argument("--seed", type=int, default=11711, help="sampling seed (default 11711; a run uses its own)")
    ev.add_argument("--trust-remote-code", action="store_true",
                    help="allow a hub model's own Python code (off by default; only for models you trust)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_dir(ev)
    ev.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="sonnet continuations of a trained run",
                         description="Continue each sonnet prompt (first lines, as in sonnets_held_out*.txt) "
                                     "with the run's model and the study's sampling settings.")
    gen.add_argument("--run", metavar="RUN_DIR", required=True, help="a sonnet run directory")
    gen.add_argument("--prompts", metavar="FILE", required=True, help="prompt file: numbered blocks of lines")
    gen.add_argument("--out", metavar="FILE", help="write the sonnets here (default: print them)")
    gen.add_argument("--seed", type=int, help="sampling seed (default: the run's)")
    _add_data_dir(gen)
    gen.set_defaults(func=cmd_generate)
    return parser


# (flag, config path, type, help) for `sftdpo train`; names follow TRL where they mean the same
TRAIN_OPTIONS = [
    ("--seed", "seed", int, "seed of data order, initialisation, dropout, sampling (default 11711)"),
    ("--epochs", "sft.epochs", int, "SFT epochs (TRL num_train_epochs)"),
    ("--lr", "sft.lr", float, "SFT peak learning rate (TRL learning_rate)"),
    ("--batch-size", "sft.batch_size", int, "SFT examples per micro-batch, all processes together"),
    ("--grad-accum", "sft.grad_accum", int, "micro-batches per optimizer step (TRL gradient_accumulation_steps)"),
    ("--warmup-ratio", "sft.warmup_ratio", float, "fraction of SFT steps warming up (TRL warmup_ratio)"),
    ("--weight-decay", "sft.weight_decay", float, "AdamW weight decay"),
    ("--max-grad-norm", "sft.max_grad_norm", float, "gradient clipping norm (0 = off)"),
    ("--handoff-epoch", "handoff_epoch", int, "sft-dpo: SFT epochs before DPO starts (default: all)"),
    ("--dpo-epochs", "dpo_optim.epochs", int, "DPO epochs"),
    ("--dpo-lr", "dpo_optim.lr", float, "DPO peak learning rate"),
    ("--dpo-batch-size", "dpo_optim.batch_size", int, "DPO pairs per micro-batch"),
    ("--beta", "dpo.beta", float, "DPO beta: strength of the anchor to the reference (default 0.1)"),
    ("--loss", "dpo.loss_type", str, "DPO loss: sigmoid | ipo | hinge (TRL loss_type)"),
    ("--label-smoothing", "dpo.label_smoothing", float, "conservative DPO: label-flip probability"),
    ("--rpo-alpha", "dpo.rpo_alpha", float, "weight of an NLL term on the chosen answer (RPO)"),
    ("--lora-rank", "lora.r", int, "LoRA rank r (TRL/peft lora_r)"),
    ("--lora-alpha", "lora.alpha", float, "LoRA alpha (updates scaled by alpha/r)"),
    ("--lora-dropout", "lora.dropout", float, "LoRA dropout"),
    ("--lora-targets", "lora.targets", str, "comma-separated module names (GPT-2: c_attn,c_proj,c_fc)"),
    ("--pairs", "pairs.construction", str, "sonnet DPO pairs: sampled | shuffled | many-per-prompt | windows"),
    ("--pairs-k", "pairs.k", int, "rejections per prompt for many-per-prompt"),
    ("--train-size", "data.train_size", float, "training examples: fraction in (0, 1] or a count"),
    ("--dev-size", "data.dev_size", int, "dev pairs for the per-epoch curve (0 = all)"),
    ("--max-length", "data.max_length", int, "longest training sequence in tokens"),
    ("--eval-samples", "data.eval_samples", int, "sonnet: sampling rounds for the final chrF"),
]


def _add_train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train one run: a task x regime x fft/lora",
                        description="Train a run and evaluate it. Defaults come from the task's preset "
                                    "(src/sftdpo/presets/train.yaml), then --config, then the options below.")
    tr.add_argument("--task", choices=["paraphrase", "sonnet"], required=True)
    tr.add_argument("--regime", choices=["sft", "dpo", "sft-dpo"], required=True)
    tr.add_argument("--params", choices=["fft", "lora"], default="fft", help="default: fft")
    tr.add_argument("--model", help="builtin:tiny|mini|small, a local HF folder, or a hub name "
                                    "(default: builtin:mini)")
    tr.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/TASK-REGIME-PARAMS-sSEED)")
    tr.add_argument("--config", metavar="FILE", help="YAML file of config values (see config.yaml of any run)")
    tr.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    tr.add_argument("--both-orders", action="store_true", default=None,
                    help="paraphrase: also train on (q2, q1) for every pair")
    tr.add_argument("--no-precompute-ref", action="store_true",
                    help="DPO: run the reference every step instead of precomputing its log-probs")
    tr.add_argument("--trust-remote-code", action="store_true", default=None,
                    help="allow a hub model's own code (only for models you trust)")
    tr.add_argument("--save-every", type=int, default=50, metavar="STEPS",
                    help="save a resumable state every STEPS optimizer steps (default 50; 0: epoch ends only)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any config value, e.g. --set dpo.beta=0.5 (repeatable)")
    tr.add_argument("--report-to", choices=REPORT_TO, default="none",
                    help="also send every logged step to this tracker (accelerate; TensorBoard: RUN_DIR/tracking)")
    tr.add_argument("--mixed-precision", choices=["auto", "no", "bf16"],
                    help="training precision (default: $ACCELERATE_MIXED_PRECISION, as set by `accelerate launch "
                         "--mixed_precision`, else auto: bf16 on a CUDA GPU that supports it, else no)")
    for flag, _, typ, text in TRAIN_OPTIONS:
        tr.add_argument(flag, type=typ, help=text)
    _add_data_dir(tr)
    tr.set_defaults(func=cmd_train)


def _add_study_parser(sub) -> None:
    st = sub.add_parser("study", help="run a whole grid of cells, resumable (or: study status DIR)",
                        description="Expand a study grid (tasks x regimes x fft/lora x ranks x handoffs x data "
                                    "sizes x pair constructions x losses x seeds), run every unfinished cell, "
                                    "and record each in DIR/study.sqlite. Rerunning skips finished cells. "
                                    "`sftdpo study status DIR` lists the cells and their states.")
    st.add_argument("action", nargs="*", metavar="status DIR", help="`status DIR`: show a study's cells")
    st.add_argument("--preset", choices=["smoke", "quick", "paper"], help="a built-in study")
    st.add_argument("--config", metavar="FILE", help="a study YAML file (keys as in src/sftdpo/presets/study-*.yaml)")
    st.add_argument("--out", metavar="DIR", help="study directory (default: studies/PRESET)")
    st.add_argument("--model", help="override the study's model (builtin:..., a folder, or a hub name)")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study key, e.g. --set seeds=1,2,3 or --set base.paraphrase.sft.lr=1e-3")
    st.add_argument("--dry-run", action="store_true", help="list the cells and estimate their cost; run nothing")
    st.add_argument("--report-to", choices=REPORT_TO, default="none",
                    help="also send every cell's logged steps to this tracker (accelerate)")
    st.add_argument("--tflops", type=float, default=100.0,
                    help="--dry-run: effective training throughput in TFLOP/s (default 100: a bf16 H100 at ~25-30%%)")
    st.add_argument("--list", action="store_true", help="--dry-run: also print every cell's key")
    st.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: cells one after another in this process (default); ray: cells as Ray tasks "
                         "on a local Ray instance or a cluster (pip install -e \".[ray]\"); this process "
                         "alone writes DIR/study.sqlite, so resume works the same")
    st.add_argument("--ray-address", metavar="ADDR",
                    help="--executor ray: a running cluster (auto, HOST:6379, ray://HOST:10001); "
                         "default: $RAY_ADDRESS, else start a local Ray instance")
    st.add_argument("--cpus-per-cell", type=float, metavar="N", help="--executor ray: CPUs per cell (default 1)")
    st.add_argument("--gpus-per-cell", type=float, metavar="N",
                    help="--executor ray: GPUs per cell, fractions pack cells on a GPU "
                         "(default: 1 if the cluster has GPUs, else 0)")
    st.add_argument("--mixed-precision", choices=["auto", "no", "bf16"],
                    help="training precision of every cell (default: $ACCELERATE_MIXED_PRECISION, else auto: "
                         "bf16 on a CUDA GPU that supports it, else no)")
    _add_data_dir(st)
    st.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    if args.action:
        if len(args.action) != 2 or args.action[0] != "status":
            raise _usage("use `sftdpo study status DIR`, or `sftdpo study --preset NAME`")
        return cmd_study_status(Path(args.action[1]))
    from tqdm.auto import tqdm

    from .data.datadir import resolve_data_dir
    from .study.grid import expand, load_spec
    from .study.runner import run_cell, run_study

    spec = load_spec(args.preset, Path(args.config) if args.config else None, args.model, args.set)
    out = Path(args.out or f"studies/{args.preset or spec.name}")
    data_root = resolve_data_dir(args.data_dir)
    if args.dry_run:
        from .study.estimate import estimate

        cells = expand(spec)
        for line in estimate(cells, data_root, args.tflops) + ([c.key for c in cells] if args.list else []):
            print(line)
        return 0
    from .study.executors import make_executor

    executor = make_executor(args.executor, args.ray_address, args.cpus_per_cell, args.gpus_per_cell)
    total = len(expand(spec))
    bar = tqdm(total=total, desc=f"study {spec.name}", unit="cell", disable=args.quiet, dynamic_ncols=True)

    def on_result(result, done: int, total: int) -> None:
        bar.n = done
        bar.refresh()
        line = f"[{done}/{total}] {result.key}: {result.status} {result.summary} in {result.seconds:.0f} s"
        bar.write(line) if not args.quiet else print(line)

    runner = functools.partial(run_cell, report_to=args.report_to, mixed_precision=args.mixed_precision)
    store = run_study(spec, out, data_root, progress=not args.quiet and args.executor == "local",
                      on_result=on_result, cell_runner=runner, executor=executor)
    bar.close()
    counts = store.counts()
    print(f"study {spec.name} in {out}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    from .report import build_report

    print(f"report: {build_report(out)}")
    return 1 if counts["failed"] else 0


def cmd_report(args) -> int:
    from .report import build_report

    folder = Path(args.dir)
    _study_db(folder)
    print(build_report(folder))
    return 0


def _study_db(folder: Path) -> Path:
    """The store of a study directory, or a usage error if there is none."""
    if not (folder / "study.sqlite").exists():
        raise _usage(f"{folder} holds no study (no study.sqlite); pass the --out of a `sftdpo study`")
    return folder / "study.sqlite"


def cmd_study_status(folder: Path) -> int:
    from .study.runner import summary_of
    from .study.store import Store

    store = Store(_study_db(folder))
    for row in store.rows():
        detail = summary_of(row.metrics) if row.metrics else (row.error or "").strip().splitlines()[-1:] or [""]
        print(f"{row.status:8} {row.key}  {detail if isinstance(detail, str) else detail[0]}")
    print(", ".join(f"{n} {state}" for state, n in store.counts().items()))
    return 0


def train_config_from_args(args):
    """The TrainConfig of `sftdpo train` options: preset <- --config <- flags <- --set."""
    from .config import load_config, set_path

    tree: dict = {"task": args.task, "regime": args.regime, "params": args.params}
    if args.model:
        tree["model"] = args.model
    if args.both_orders:
        tree = set_path(tree, ["data", "both_orders"], True)
    if args.no_precompute_ref:
        tree = set_path(tree, ["dpo", "precompute_ref_log_probs"], False)
    if args.trust_remote_code:
        tree["trust_remote_code"] = True
    for flag, path, _, _ in TRAIN_OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            tree = set_path(tree, path.split("."), value)
    return load_config(Path(args.config) if args.config else None, tree, args.set)


def cmd_train(args) -> int:
    from .data.datadir import resolve_data_dir
    from .regimes import train

    if args.save_every < 0:
        raise _usage(f"--save-every must be >= 0 (0: save at epoch ends only), got {args.save_every}")
    cfg = train_config_from_args(args)
    out = Path(args.out or f"runs/{cfg.task}-{cfg.regime}-{cfg.params}-s{cfg.seed}")
    metrics = train(cfg, out, resolve_data_dir(args.data_dir), resume=args.resume, progress=not args.quiet,
                    save_every=args.save_every, report_to=args.report_to, mixed_precision=args.mixed_precision)
    if not metrics:  # a non-main process of `accelerate launch`: the main one reports
        return 0
    split = "test"
    shown = {k: v for k, v in metrics[split].items() if isinstance(v, float)}
    print(f"{cfg.task} {cfg.regime} {cfg.params}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    print(f"train {metrics['train_seconds']:.1f} s, {metrics['trainable_params']:,} trainable parameters "
          f"({metrics['trainable_fraction']:.2%}), peak memory {metrics['peak_memory_mb']:.0f} MiB -> {out}")
    return 0


def cmd_generate(args) -> int:
    from .config import TrainConfig, from_dict, read_yaml
    from .data.datadir import resolve_data_dir
    from .data.sonnets import read_sonnets
    from .evaluate import make_task
    from .models import load_model_and_tokenizer

    run = Path(args.run)
    if not (run / "checkpoint" / "config.json").exists():
        raise _usage(f"{run} has no checkpoint; pass the --out of a finished `sftdpo train`")
    cfg = from_dict(TrainConfig, read_yaml(run / "config.yaml"))
    model, tokenizer = load_model_and_tokenizer(str(run / "checkpoint"))
    task = make_task("sonnet", resolve_data_dir(args.data_dir), tokenizer)
    prompts = read_sonnets(Path(args.prompts))
    texts = task.generate(model, [p.text for p in prompts], seed=cfg.seed if args.seed is None else args.seed)
    body = "".join(f"{p.number}\n{t}\n\n" for p, t in zip(prompts, texts))
    if args.out:
        from .io import atomic_write_text

        atomic_write_text(Path(args.out), body)
        print(f"{len(texts)} sonnets -> {args.out}")
    else:
        print(body, end="")
    return 0


def cmd_data_check(args) -> int:
    from .data.check import check_data_dir, format_report
    from .data.datadir import resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    summary, problems = check_data_dir(root)
    print(format_report(summary, problems))
    if problems:  # the report above lists them all; the error line names the first
        more = f" (and {len(problems) - 1} more problem(s), listed above)" if len(problems) > 1 else ""
        print(f"sftdpo: error: {problems[0]}{more}", file=sys.stderr)
    return 1 if problems else 0


def cmd_data_fetch(args) -> int:
    from .data.datadir import default_data_dir
    from .data.fetch import fetch

    for line in fetch(Path(args.dest) if args.dest else default_data_dir()):
        print(line)
    return 0


def cmd_backbone_build(args) -> int:
    from .backbone import build_backbone
    from .data.datadir import resolve_data_dir

    path = build_backbone(args.size, resolve_data_dir(args.data_dir), Path(args.out) if args.out else None,
                          seed=args.seed, progress=not args.quiet, force=args.force)
    card = json.loads((path / "card.json").read_text())
    print(f"backbone {args.size}: {card['parameters']:,} parameters, {card['tokens_seen']:,} tokens seen, "
          f"val loss {card['val_loss']}, built in {card['build_seconds']} s")
    print(path)
    return 0


def cmd_eval(args) -> int:
    from .data.datadir import resolve_data_dir
    from .evaluate import evaluate_model

    if args.samples < 1:
        raise _usage("--samples must be at least 1")
    if args.run:
        from .evaluate import evaluate_run

        result = evaluate_run(Path(args.run), resolve_data_dir(args.data_dir), args.split,
                              eval_file=args.eval_file, prompts=args.prompts, references=args.references,
                              samples=args.samples)
        if args.json:
            print(json.dumps(result[args.split]))
        else:
            print(f"{args.split}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in result[args.split].items()))
        return 0
    tasks = ["paraphrase", "sonnet"] if args.task == "all" else [args.task]
    results = evaluate_model(args.model, resolve_data_dir(args.data_dir), tasks, split=args.split,
                             seed=args.seed, samples=args.samples, eval_file=args.eval_file,
                             prompts=args.prompts, references=args.references,
                             trust_remote_code=args.trust_remote_code, progress=not args.quiet)
    if args.json:
        print(json.dumps(results if len(tasks) > 1 else results[tasks[0]]))
    else:
        for task, res in results.items():
            print(f"{task} ({args.split}): " + ", ".join(f"{k} {_fmt(v)}" for k, v in res.items()))
    return 0


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _usage(message: str) -> SftdpoError:
    from .errors import UsageError

    return UsageError(message)


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        return args.func(args)
    except SftdpoError as e:
        if args.debug:
            raise
        print(f"sftdpo: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sftdpo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the environment: a full disk, an unwritable or vanished path
        if args.debug:
            raise
        from .io import is_disk_full, write_error

        where = e.filename or "a file"
        message = (write_error(where, e) if is_disk_full(e) else
                   f"{e.strerror or e}: {where}; check that the path exists and is writable (--debug: traceback)")
        print(f"sftdpo: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
