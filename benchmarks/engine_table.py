"""Markdown table of the runs written by benchmarks/engine_table.sh: python benchmarks/engine_table.py OUT_DIR"""

import json
import sys
from pathlib import Path


def row(m: dict) -> str:
    t = m["test"]
    score = (f"acc {t['accuracy']:.4f}, F1 {t['f1']:.4f}" if m["task"] == "paraphrase"
             else f"chrF {t['chrf']:.2f}, NLL {t['nll']:.3f}, distinct-2 {t['distinct_2']:.3f}")
    return (f"| {m['task']} | {m['regime']} | {m['params']} | {score} | {m['train_seconds']:.0f} | "
            f"{m['seconds_per_step']:.3f} | {m['trainable_params']:,} ({m['trainable_fraction']:.1%}) | "
            f"{m['peak_memory_mb']:.0f} |")


def main(out: Path) -> None:
    print("| task | regime | params | test metrics | train s | s/step | trainable params | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(out.glob("*/metrics.json")):
        print(row(json.loads(path.read_text())))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
