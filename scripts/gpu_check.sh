#!/usr/bin/env bash
# The smoke study on this machine's accelerator: which device and precision the engine picks, and
# the throughput it gets. On a machine without a CUDA GPU it runs on the CPU and says so.
#
#   scripts/gpu_check.sh [DATA_DIR] [extra `sftdpo study` options, e.g. --set seeds=1 --mixed-precision no]
#
# DATA_DIR defaults to $SFTDPO_DATA_DIR, else ../shared/data. The study goes to a temp dir (kept
# and printed; set GPU_CHECK_OUT to choose it). Exit code: the study's (1 if a cell failed).
set -euo pipefail

data="${SFTDPO_DATA_DIR:-../shared/data}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    data="$1"
    shift
fi
out="${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sftdpo-gpu-check.XXXXXX")/smoke}"
python="${PYTHON:-python3}"

"$python" - "$@" <<'EOF'
import sys

import torch

from sftdpo.regimes import resolve_mixed_precision

args = sys.argv[1:]
choice = args[args.index("--mixed-precision") + 1] if "--mixed-precision" in args else None
print(f"torch {torch.__version__}")
if torch.cuda.is_available():
    name = torch.cuda.get_device_name(0)
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    print(f"device: cuda ({torch.cuda.device_count()} x {name}, compute capability "
          f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}); native bf16: {'yes' if bf16 else 'no'}")
else:
    print("device: cpu (no CUDA GPU visible: this check runs on the CPU)")
precision = resolve_mixed_precision(choice)
print(f"mixed precision: {precision} ({'from --mixed-precision' if choice else 'auto or $ACCELERATE_MIXED_PRECISION'}); "
      "fp16: not used (sftdpo trains in bf16 or fp32)")
EOF

mkdir -p "$(dirname "$out")"
echo "smoke study -> $out"
start=$(date +%s.%N)
rc=0
sftdpo study --preset smoke --data-dir "$data" --out "$out" --quiet "$@" > "$out.log" 2>&1 || rc=$?
end=$(date +%s.%N)
tail -n 2 "$out.log"

"$python" - "$out" "$start" "$end" <<'EOF'
import json
import sqlite3
import sys

out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
db = sqlite3.connect(f"file:{out}/study.sqlite?mode=ro", uri=True)
rows = [json.loads(m) for (m,) in db.execute("SELECT metrics FROM cells WHERE status = 'done'")]
total = db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
if not rows:
    sys.exit(f"no cell finished; see {out}.log")
wall = end - start
tokens = sum(stage["tokens"] for m in rows for stage in m["stages"].values())
train_s = sum(m["train_seconds"] for m in rows)
devices = sorted({f"{m.get('device', '?')}/{m.get('mixed_precision', '?')}" for m in rows})
print(f"cells: {len(rows)}/{total} done in {wall:.1f} s wall: {len(rows) / wall:.3f} cells/s "
      f"(including the tiny backbone build if it was not cached, and each cell's evaluation)")
print(f"training: {tokens:,} tokens in {train_s:.1f} s: {tokens / train_s:,.0f} tokens/s "
      f"(device/precision recorded by the cells: {', '.join(devices)})")
print(f"peak memory per cell: {max(m['peak_memory_mb'] for m in rows):.0f} MiB")
EOF
exit "$rc"
