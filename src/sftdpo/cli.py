"""The `sftdpo` command: a thin argparse front. User errors end in one line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import SftdpoError

log = logging.getLogger("sftdpo")


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

    ev = sub.add_parser("eval", help="metrics of a model on a task",
                        description="Evaluate a model on the paraphrase and/or sonnet task.")
    ev.add_argument("--model", default="builtin:mini",
                    help="builtin:tiny|mini|small, a local Hugging Face folder, or a hub name such as gpt2 "
                         "(default: builtin:mini)")
    ev.add_argument("--task", choices=["paraphrase", "sonnet", "all"], default="all", help="default: all")
    ev.add_argument("--split", choices=["dev", "test"], default="test", help="default: test")
    ev.add_argument("--eval-file", metavar="FILE", help="paraphrase: evaluate on this TSV/CSV instead")
    ev.add_argument("--prompts", metavar="FILE", help="sonnet: held-out prompt file (first 3 lines)")
    ev.add_argument("--references", metavar="FILE", help="sonnet: the true sonnets of --prompts")
    ev.add_argument("--samples", type=int, default=1, help="sonnet: sampling rounds averaged (default 1)")
    ev.add_argument("--seed", type=int, default=11711, help="sampling seed (default 11711)")
    ev.add_argument("--trust-remote-code", action="store_true",
                    help="allow a hub model's own Python code (off by default; only for models you trust)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_dir(ev)
    ev.set_defaults(func=cmd_eval)
    return parser


def cmd_data_check(args) -> int:
    from .data.check import check_data_dir, format_report
    from .data.datadir import resolve_data_dir

    summary, problems = check_data_dir(resolve_data_dir(args.data_dir))
    print(format_report(summary, problems))
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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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


if __name__ == "__main__":
    sys.exit(main())
