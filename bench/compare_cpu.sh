#!/usr/bin/env bash
# loom vs llama.cpp on the CPU, side by side in one run on one machine: makes random-weight models
# (loom random-model / convert, bench/make_gguf.py, llama-quantize), runs `loom bench` and
# `llama-bench` with the same prompt/generation lengths, threads and repetitions, and prints one table
# with the ratio loom / llama.cpp. Builds nothing: pass the binaries.
#
#   bench/compare_cpu.sh --loom build/loom --llama-bench LB --llama-quantize LQ --gguf-py LLAMA_CPP/gguf-py \
#       [--preset llama-3.2-1b] [--moe-preset qwen3-moe-small | --no-moe] [--bf16] [-p 512] [-n 128] [-d DEPTH]
#       [-r 3] [-t THREADS] [--work DIR]
#
# Pairs: MLX affine 4-bit g64 vs Q4_0 and 8-bit g64 vs Q8_0 (plus bf16 vs BF16 with --bf16) of the
# dense preset, converted from one bf16 checkpoint so both sides hold the same weights (llama-quantize
# keeps its defaults, e.g. Q6_K for the tied output matrix under Q4_0); the MoE preset at 4-bit is
# written directly at its target type on each side (`random-model --q-bits 4`, `make_gguf.py random`),
# so its weights are random but not equal. Models are kept in --work and reused by later runs.
set -u -o pipefail

LOOM="" LB="" LQ="" GGUF_PY="" PRESET="llama-3.2-1b" MOE="qwen3-moe-small" BF16=0
P=512 N=128 D="" R=3 T="$(nproc)" WORK="${TMPDIR:-/tmp}/loom-compare-cpu"
HERE="$(cd "$(dirname "$0")" && pwd)"
while [ $# -gt 0 ]; do
  case "$1" in
    --loom) LOOM="$2"; shift 2 ;;
    --llama-bench) LB="$2"; shift 2 ;;
    --llama-quantize) LQ="$2"; shift 2 ;;
    --gguf-py) GGUF_PY="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --moe-preset) MOE="$2"; shift 2 ;;
    --no-moe) MOE=""; shift ;;
    --bf16) BF16=1; shift ;;
    -p) P="$2"; shift 2 ;;
    -n) N="$2"; shift 2 ;;
    -d) D="$2"; shift 2 ;;
    -r) R="$2"; shift 2 ;;
    -t) T="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "compare_cpu: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in LOOM LB LQ GGUF_PY; do
  [ -n "${!v}" ] || { echo "compare_cpu: --loom, --llama-bench, --llama-quantize and --gguf-py are required" >&2; exit 2; }
done
LOOM="$(realpath "$LOOM")" LB="$(realpath "$LB")" LQ="$(realpath "$LQ")" GGUF_PY="$(realpath "$GGUF_PY")"
PY="${PYTHON:-/usr/bin/python3}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
RES="$WORK/results.tsv"
: > "$RES"
FAILS=0

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# Runs a step, logging it; a failing step is reported and counted, never fatal.
step() {
  log "+ $*"
  "$@" || { log "FAILED ($?): $*"; FAILS=$((FAILS + 1)); return 1; }
}
# Makes $1 (a file or folder) by running the rest unless it already exists.
make_once() {
  local out="$1"; shift
  if [ -e "$out" ]; then log "reusing $out"; return 0; fi
  step "$@"
}

# Runs a command whose output is captured; logs it and counts a failure (the caller returns).
capture() {
  log "+ $*"
  "$@"
}

# loom bench -> rows "loom <label> <test> <depth> <t/s>"
bench_loom() {
  local label="$1" model="$2" depth="${3:-0}" out
  out="$(capture "$LOOM" bench --model "$model" --device cpu -p "$P" -n "$N" -d "$depth" -r "$R" -t "$T")" ||
    { log "FAILED: loom bench $model"; FAILS=$((FAILS + 1)); return 1; }
  echo "$out" >&2
  echo "$out" | awk -v l="$label" -F'|' '/^\| (pp|tg)[0-9]/ {gsub(/ /,"",$2); gsub(/ /,"",$3); gsub(/ /,"",$4);
    print "loom\t" l "\t" $2 "\t" $3 "\t" $4}' >> "$RES"
  echo "$out" | sed -n "s|^peak memory: \([0-9.]*\) GB allocated.*, \([0-9.]*\) GB max RSS.*|loom\t$label\tpeak\t-\t\1 GB allocator, \2 GB RSS|p" >> "$RES"
}

# llama-bench -> rows "llama <label> <test> <depth> <t/s>"
read -r -d '' PARSE_LLAMA_JSON <<'EOF_PY'
import json, sys
label = sys.argv[1]
for r in json.load(sys.stdin):
    test = ('pp%d' % r['n_prompt']) if r['n_prompt'] else ('tg%d' % r['n_gen'])
    best = max(r.get('samples_ts') or [r['avg_ts']])  # best of -r, as loom bench reports
    print('llama\t%s\t%s\t%d\t%.2f' % (label, test, r.get('n_depth', 0), best))
    print('llama-bench: %s best %.2f, mean %.2f +- %.2f t/s; build %s, %s threads, %s, %.2f GB'
          % (test, best, r['avg_ts'], r.get('stddev_ts', 0), r.get('build_commit', '?'), r.get('n_threads'),
             r.get('model_type', ''), r.get('model_size', 0) / 1e9), file=sys.stderr)
EOF_PY
bench_llama() {
  local label="$1" model="$2" depth="${3:-0}" out
  out="$(capture "$LB" -m "$model" -p "$P" -n "$N" -d "$depth" -r "$R" -t "$T" -o json)" ||
    { log "FAILED: llama-bench $model"; FAILS=$((FAILS + 1)); return 1; }
  echo "$out" | "$PY" -c "$PARSE_LLAMA_JSON" "$label" >> "$RES"
}

# ---- dense preset: one bf16 checkpoint, loom quantizations and GGUF quantizations of it
M="$WORK/$PRESET"
make_once "$M-bf16" "$LOOM" random-model --preset "$PRESET" --out "$M-bf16" --dtype bfloat16
make_once "$M-4bit" "$LOOM" convert --hf-path "$M-bf16" --mlx-path "$M-4bit" -q --q-bits 4 --q-group-size 64
make_once "$M-8bit" "$LOOM" convert --hf-path "$M-bf16" --mlx-path "$M-8bit" -q --q-bits 8 --q-group-size 64
make_once "$M-bf16.gguf" "$PY" "$HERE/make_gguf.py" --gguf-py "$GGUF_PY" convert --model "$M-bf16" --out "$M-bf16.gguf" --outtype bf16
make_once "$M-q4_0.gguf" "$LQ" "$M-bf16.gguf" "$M-q4_0.gguf" Q4_0 "$T"
make_once "$M-q8_0.gguf" "$LQ" "$M-bf16.gguf" "$M-q8_0.gguf" Q8_0 "$T"

pairs=("4-bit/Q4_0|$M-4bit|$M-q4_0.gguf" "8-bit/Q8_0|$M-8bit|$M-q8_0.gguf")
[ "$BF16" = 1 ] && pairs+=("bf16/BF16|$M-bf16|$M-bf16.gguf")

# ---- MoE preset at 4-bit, each side written directly
if [ -n "$MOE" ]; then
  E="$WORK/$MOE"
  make_once "$E-4bit" "$LOOM" random-model --preset "$MOE" --out "$E-4bit" --q-bits 4 --q-group-size 64
  make_once "$E-q4_0.gguf" "$PY" "$HERE/make_gguf.py" --gguf-py "$GGUF_PY" random --config "$E-4bit/config.json" \
    --out "$E-q4_0.gguf" --outtype q4_0
  pairs+=("$MOE 4-bit/Q4_0|$E-4bit|$E-q4_0.gguf")
fi

for pr in "${pairs[@]}"; do
  IFS='|' read -r label lm gm <<< "$pr"
  [ "${label%% *}" = "$label" ] && label="$PRESET $label"
  for depth in 0 $D; do
    [ -e "$lm" ] && bench_loom "$label" "$lm" "$depth"
    [ -e "$gm" ] && bench_llama "$label" "$gm" "$depth"
  done
done

# ---- one table
echo
echo "loom vs llama.cpp, CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $T threads, -p $P -n $N, best of -r $R runs on both sides"
"$PY" - "$RES" <<'EOF'
import sys
rows, peaks, order = {}, {}, []
for line in open(sys.argv[1]):
    side, label, test, depth, val = line.rstrip("\n").split("\t")
    if test == "peak":
        peaks[label] = val
        continue
    key = (label, test, depth)
    if key not in rows:
        rows[key] = {}
        order.append(key)
    rows[key][side] = float(val)
print("| model / weights | test | depth | loom t/s | llama.cpp t/s | loom / llama.cpp |")
print("|---|---|---|---|---|---|")
for key in order:
    r = rows[key]
    lo, ll = r.get("loom"), r.get("llama")
    ratio = f"{lo / ll:.2f}x" if lo and ll else "-"
    f = lambda v: f"{v:.2f}" if v is not None else "failed"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {f(lo)} | {f(ll)} | {ratio} |")
for label, v in peaks.items():
    print(f"loom peak memory, {label}: {v}")
EOF
[ "$FAILS" = 0 ] || echo "compare_cpu: $FAILS step(s) failed (see the log above)" >&2
exit $(( FAILS > 0 ))
