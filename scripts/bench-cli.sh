#!/usr/bin/env bash
# Whole-process timing of the df11 commands against a plain copy of the same
# checkpoint, in the same run: each command is one process, `sync` included,
# runs alternate (cp, compress, verify, decompress, cp, ...) so a machine whose
# speed drifts affects all of them alike, and the table gives the median of
# each and its ratio to the median `cp -r` + `sync`.
#
# Usage: scripts/bench-cli.sh [WORK_DIR] [RUNS] [LAYERS] [HIDDEN]
#   defaults: target/bench-cli, 5 runs, a 4-layer hidden-4096 Llama-style
#   checkpoint in 2 shards (1.55 GB of bf16).
# Extra df11 options (e.g. --threads 1) can be given in DF11_OPTS, and
# options of `compress` alone (e.g. --layout lanes9) in DF11_COMPRESS_OPTS:
# they shape both the timed output and the copy that verify and decompress read.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/bench-cli}"
runs="${2:-5}"
layers="${3:-4}"
hidden="${4:-4096}"
read -r -a opts <<<"${DF11_OPTS:-}"
read -r -a copts <<<"${DF11_COMPRESS_OPTS:-}"

cargo build --release --locked --bin df11 --example make_checkpoint >&2
df11=target/release/df11
mkdir -p "$work"
orig="$work/original"
if [[ ! -f "$orig/config.json" ]]; then
    target/release/examples/make_checkpoint "$orig" "$layers" "$hidden" 2 >&2
fi
sync
# One compressed copy to decompress and verify against, made outside the timings.
rm -rf "$work/ref.df11"
"$df11" -q "${opts[@]}" compress "${copts[@]}" "$orig" -o "$work/ref.df11"
sync

now() { date +%s.%N; }
# time_cmd NAME CMD...: runs CMD then sync, appends the seconds to $work/NAME.times.
time_cmd() {
    local name="$1"
    shift
    local t0 t1
    t0=$(now)
    "$@" >/dev/null
    sync
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f\n", b - a}' >>"$work/$name.times"
}

rm -f "$work"/*.times
# Each command's output of the previous round is removed, and the machine
# left idle for a few seconds, right before it runs, so that every command
# starts from the same state of memory. On a VM whose guest reports free
# pages to its host, memory left free for a few seconds is taken back and
# the next writer pays for each page again: when all outputs were removed
# at the start of a round, `cp` (first) reused the freed pages and
# decompress (last) did not, measured 1.2 s against 1.8-2.5 s for the same
# decompress.
settle() {
    [[ -n "${1:-}" ]] && rm -rf "$1"
    sync
    sleep "${SETTLE_S:-3}"
}
for ((i = 0; i <= runs; i++)); do
    settle "$work/cp"
    time_cmd cp cp -r "$orig" "$work/cp"
    settle "$work/c.df11"
    time_cmd compress "$df11" -q "${opts[@]}" compress "${copts[@]}" "$orig" -o "$work/c.df11"
    settle
    time_cmd verify "$df11" -q "${opts[@]}" verify "$orig" "$work/ref.df11"
    settle "$work/d.out"
    time_cmd decompress "$df11" -q "${opts[@]}" decompress "$work/ref.df11" -o "$work/d.out"
    if ((i == 0)); then
        # The first round warms the page cache and is not counted.
        rm -f "$work"/*.times
    fi
done

median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
bytes=$(du -sb "$orig" | cut -f1)
cp_med=$(median "$work/cp.times")
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f", a / b}'; }
printf 'checkpoint: %s (%.2f GB), %d runs, %s cores, df11 options: %s, compress options: %s\n' \
    "$orig" "$(div "$bytes" 1e9)" "$runs" "$(nproc)" "${DF11_OPTS:-none}" "${DF11_COMPRESS_OPTS:-none}"
printf '| command | median s | min s | max s | GB/s of bf16 | ÷ cp |\n|---|---:|---:|---:|---:|---:|\n'
for name in cp compress verify decompress; do
    f="$work/$name.times"
    med=$(median "$f")
    printf '| %s | %.3f | %.3f | %.3f | %.2f | %.2f |\n' "$name" "$med" \
        "$(sort -g "$f" | head -n1)" "$(sort -g "$f" | tail -n1)" \
        "$(div "$bytes" "$med" | awk '{print $1 / 1e9}')" "$(div "$med" "$cp_med")"
done
