#!/usr/bin/env bash
# Benchmark: etcdplan against `etcdctl make-mirror` and raw batched writes,
# in ONE run on the same pair of freshly started local etcd servers.
#
#   bash examples/bench.sh [-n KEYS] [--runs R] [--no-mirror]
#
# Defaults: 100,000 keys of ~200-byte JSON, 3 runs per figure (medians).
# --no-mirror skips make-mirror (it takes ~12 minutes at 1,000,000 keys).
set -euo pipefail
cd "$(dirname "$0")/.."

N=100000
RUNS=3
MIRROR=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --no-mirror) MIRROR=0; shift ;;
    *) echo "usage: $0 [-n KEYS] [--runs R] [--no-mirror]" >&2; exit 1 ;;
  esac
done

work=$(mktemp -d)
. examples/lib.sh
install_missing "etcd:etcd-server" "etcdctl:etcd-client" "protoc:protobuf-compiler libprotobuf-dev" "/usr/bin/time:time"

cargo build --release --locked --quiet --bin etcdplan --example benchtool
BIN=$PWD/target/release/etcdplan
TOOL=$PWD/target/release/examples/benchtool

# A roomy quota: 1,000,000 keys and their history exceed the 2 GiB default.
quota=(--quota-backend-bytes $((8 * 1024 * 1024 * 1024)))
start_etcd source http "${quota[@]}"; SRC=$url
start_etcd destination http "${quota[@]}"; DST=$url
for ep in "$SRC" "$DST"; do
  for _ in $(seq 100); do "$TOOL" rev "$ep" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "etcd $(etcd --version | head -1 | awk '{print $3}'): source $SRC, destination $DST; $N keys, $RUNS run(s) per figure"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

t=$(now); "$TOOL" seed "$SRC" /bench/src/ "$N"; echo "seeded $N keys in $(elapsed "$t") s"

cat >"$work/plan.yaml" <<EOF
version: 1
name: bench
source:
  endpoints: [$SRC]
destination:
  endpoints: [$DST]
prefixes:
  - from: /bench/src/
    to: /bench/ep/
on_conflict: fail
EOF

mirror=(); raw=(); apply=(); noop=(); plan=(); rss=(); read=()
for run in $(seq "$RUNS"); do
  if [ "$MIRROR" = 1 ]; then
    "$TOOL" clear "$DST" /bench/mm/
    t=$(now)
    etcdctl --endpoints="$SRC" make-mirror --prefix=/bench/src/ --dest-prefix=/bench/mm/ "$DST" >/dev/null 2>&1 &
    mm=$!
    while [ "$("$TOOL" count "$DST" /bench/mm/)" -lt "$N" ]; do sleep 0.1; done
    mirror+=("$(elapsed "$t")")
    kill "$mm"; wait "$mm" 2>/dev/null || true
  fi

  "$TOOL" clear "$DST" /bench/raw/
  t=$(now); "$TOOL" raw "$DST" /bench/raw/ "$N"; raw+=("$(elapsed "$t")")

  "$TOOL" clear "$DST" /bench/ep/
  t=$(now); "$BIN" apply "$work/plan.yaml" --auto-approve --max-listed 0 >"$work/apply.out" 2>&1
  apply+=("$(elapsed "$t")")
  grep -q "Apply complete: $(printf "%'d" "$N" 2>/dev/null || echo "$N")" "$work/apply.out" ||
    grep -q "Apply complete" "$work/apply.out" || { cat "$work/apply.out"; exit 1; }

  before=$("$TOOL" rev "$DST")
  t=$(now); "$BIN" apply "$work/plan.yaml" --auto-approve >"$work/noop.out" 2>&1
  noop+=("$(elapsed "$t")")
  after=$("$TOOL" rev "$DST")
  echo "run $run: no-op rerun: destination revision $before before, $after after"
  [ "$before" = "$after" ] || { echo "the no-op rerun wrote to the destination" >&2; exit 1; }

  /usr/bin/time -f "%e %M" -o "$work/time.out" "$BIN" plan "$work/plan.yaml" >/dev/null
  plan+=("$(awk '{print $1}' "$work/time.out")"); rss+=("$(awk '{print $2}' "$work/time.out")")

  t=$(now); "$TOOL" read "$SRC" /bench/src/ >/dev/null; "$TOOL" read "$DST" /bench/ep/ >/dev/null
  read+=("$(elapsed "$t")")
done

m_raw=$(median "${raw[@]}"); m_apply=$(median "${apply[@]}"); m_noop=$(median "${noop[@]}")
m_plan=$(median "${plan[@]}"); m_rss=$(median "${rss[@]}"); m_read=$(median "${read[@]}")
echo
echo "## etcdplan benchmark: $N keys, median of $RUNS run(s)"
echo
echo "| figure | seconds | ratio |"
echo "| --- | ---: | --- |"
if [ "$MIRROR" = 1 ]; then
  m_mirror=$(median "${mirror[@]}")
  echo "| etcdctl make-mirror | $m_mirror | |"
fi
echo "| raw 128-put transactions (no reads, no guards) | $m_raw | |"
if [ "$MIRROR" = 1 ]; then
  echo "| etcdplan apply (plan + write + verify) | $m_apply | $(awk -v a="$m_mirror" -v b="$m_apply" 'BEGIN{printf "%.1fx faster than make-mirror", a/b}'), $(awk -v a="$m_apply" -v b="$m_raw" 'BEGIN{printf "%.2fx the raw baseline", a/b}') |"
else
  echo "| etcdplan apply (plan + write + verify) | $m_apply | $(awk -v a="$m_apply" -v b="$m_raw" 'BEGIN{printf "%.2fx the raw baseline", a/b}') |"
fi
echo "| raw read of both ranges | $m_read | |"
echo "| etcdplan apply, no-op rerun | $m_noop | $(awk -v a="$m_noop" -v b="$m_read" 'BEGIN{printf "%.2fx the raw read", a/b}') |"
echo "| etcdplan plan, no changes | $m_plan | peak RSS $(awk -v k="$m_rss" 'BEGIN{printf "%.1f MiB", k/1024}') |"
