#!/usr/bin/env bash
# Benchmark: etcdplan against the strongest raw baselines, in ONE run on the
# same pair of freshly started local etcd servers.
#
#   bash examples/bench.sh [-n KEYS] [--runs R] [--rtt MS] [--mirror] [--snapshot]
#
# Defaults: 100,000 keys of ~200-byte JSON, 1 run per figure (medians of R).
# Ceilings, both written with etcd-client (examples/benchtool.rs):
#   writes: unguarded 128-put transactions, pipelined, 4 to 128 in flight
#           on one connection and 32 to 128 spread over 8 (as etcdplan does);
#   reads:  both ranges read at once, each as bounded sub-ranges in parallel
#           (split points known in advance), 16, 32 or 64 sub-ranges.
# Each ceiling is its fastest configuration: the lowest median over the runs.
# --rtt MS puts the destination behind examples/latency-proxy.py, which
# delays every chunk by MS/2 each way (a round trip of MS ms at loopback
# bandwidth; this kernel has no netem). Every figure then goes through that
# link, the no-op rerun is also compared with one plain paged read of the
# destination through it, and `etcdctl make-mirror` is timed on 1,000 keys.
# --mirror also times `etcdctl make-mirror` (about 12 minutes at 1,000,000 keys).
# --snapshot writes every key a second time (so the file holds history),
# saves a snapshot, and times `plan` and `apply` from it against
# `snapshot restore` of the same file and the raw write ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."

N=100000
RUNS=1
MIRROR=0
SNAPSHOT=0
RTT=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --mirror) MIRROR=1; shift ;;
    --no-mirror) MIRROR=0; shift ;;
    --snapshot) SNAPSHOT=1; shift ;;
    --rtt) RTT="$2"; shift 2 ;;
    *) echo "usage: $0 [-n KEYS] [--runs R] [--rtt MS] [--mirror] [--snapshot]" >&2; exit 1 ;;
  esac
done

work=$(mktemp -d)
. examples/lib.sh
install_missing "etcd:etcd-server" "etcdctl:etcd-client" "protoc:protobuf-compiler libprotobuf-dev" "/usr/bin/time:time" "python3:python3"

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
link="loopback"
if [ "$RTT" != 0 ]; then
  # The destination across a long link: every figure goes through the proxy.
  free_port; proxy_port=$port
  python3 examples/latency-proxy.py "$proxy_port" "${DST##*:}" "$(awk -v r="$RTT" 'BEGIN { print r / 2 }')" \
    >"$work/proxy.log" 2>&1 &
  pids+=($!)
  DST="http://127.0.0.1:$proxy_port"
  for _ in $(seq 100); do "$TOOL" rev "$DST" >/dev/null 2>&1 && break; sleep 0.1; done
  link="a ${RTT} ms round trip to the destination (examples/latency-proxy.py)"
fi
echo "etcd $(etcd --version | head -1 | awk '{print $3}'): source $SRC, destination $DST over $link; $N keys, $RUNS run(s) per figure"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
# timed NAME CMD…: runs CMD under /usr/bin/time; sets $secs and $kib (peak RSS).
# Before each timed figure: the previous step's dirty pages written back, so
# their writeback does not slow the next figure's fsyncs.
timed() {
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@"
  secs=$(awk '{print $1}' "$work/time.out"); kib=$(awk '{print $2}' "$work/time.out")
}

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
EOF

# Every configuration's times over the runs: a ceiling is the configuration
# whose median is lowest. (The median of each run's fastest would let one
# lucky sample among nine set it.)
declare -A last_w=() w_all=() r_all=(); apply=(); apply_kib=(); saved=(); saved_kib=()
planned=(); planned_kib=(); noop=(); noop_kib=(); plan=(); plan_kib=(); mirror=(); seq_read=()
# Transactions in flight, then "x" and the connections they are spread over.
in_flight=(4 8 16 32 64 128 32x8 64x8 128x8)
for run in $(seq "$RUNS"); do
  # The write ceiling: the best of those.
  for k in "${in_flight[@]}"; do
    "$TOOL" clear "$DST" /bench/raw/
    sync
    conns=1; [[ "$k" == *x* ]] && conns=${k#*x}
    t=$(now); CONNECTIONS=$conns "$TOOL" raw "$DST" /bench/raw/ "$N" "${k%x*}"; s=$(elapsed "$t")
    last_w[$k]=$s; w_all[$k]+="$s "
  done
  "$TOOL" clear "$DST" /bench/raw/
  shown=(); for k in "${in_flight[@]}"; do shown+=("$k: ${last_w[$k]} s"); done
  echo "run $run: raw writer by transactions in flight: ${shown[*]}"

  if [ "$MIRROR" = 1 ]; then
    "$TOOL" clear "$DST" /bench/mm/
    t=$(now)
    etcdctl --endpoints="$SRC" make-mirror --prefix=/bench/src/ --dest-prefix=/bench/mm/ "$DST" >/dev/null 2>&1 &
    mm=$!
    while [ "$("$TOOL" count "$DST" /bench/mm/)" -lt "$N" ]; do sleep 0.1; done
    mirror+=("$(elapsed "$t")")
    kill "$mm"; wait "$mm" 2>/dev/null || true
    "$TOOL" clear "$DST" /bench/mm/
  fi

  # apply from the plan file: plan and writes overlap.
  "$TOOL" clear "$DST" /bench/ep/
  timed "$BIN" apply "$work/plan.yaml" --auto-approve --max-listed 0 >"$work/apply.out" 2>&1 ||
    { cat "$work/apply.out"; exit 1; }
  grep -q "Apply complete" "$work/apply.out" || { cat "$work/apply.out"; exit 1; }
  apply+=("$secs"); apply_kib+=("$kib")

  # The read ceiling, now that both ranges hold N keys: both read at once.
  for p in 16 32 64; do
    sync
    t=$(now)
    "$TOOL" pread "$SRC" /bench/src/ "$N" "$p" >/dev/null & a=$!
    "$TOOL" pread "$DST" /bench/ep/ "$N" "$p" >/dev/null & b=$!
    wait "$a" "$b"
    r_all[$p]+="$(elapsed "$t") "
  done
  # One plain paged read of the destination (5,000 keys a page).
  sync; t=$(now); "$TOOL" read "$DST" /bench/ep/ >/dev/null; seq_read+=("$(elapsed "$t")")

  # The no-op rerun: only reads, and must not move the destination's revision.
  before=$("$TOOL" rev "$DST")
  timed "$BIN" apply "$work/plan.yaml" --auto-approve >"$work/noop.out" 2>&1 || { cat "$work/noop.out"; exit 1; }
  after=$("$TOOL" rev "$DST")
  [ "$before" = "$after" ] || { echo "the no-op rerun wrote to the destination ($before -> $after)" >&2; exit 1; }
  noop+=("$secs"); noop_kib+=("$kib")

  # plan, no changes.
  timed "$BIN" plan "$work/plan.yaml" >/dev/null
  plan+=("$secs"); plan_kib+=("$kib")

  # A saved plan of every key, applied later: values from one scan of the source.
  "$TOOL" clear "$DST" /bench/ep/
  timed "$BIN" plan "$work/plan.yaml" --out "$work/saved.json" --max-listed 0 >/dev/null
  planned+=("$secs"); planned_kib+=("$kib")
  timed "$BIN" apply "$work/saved.json" --max-listed 0 >"$work/saved.out" 2>&1 || { cat "$work/saved.out"; exit 1; }
  grep -q "Apply complete" "$work/saved.out" || { cat "$work/saved.out"; exit 1; }
  saved+=("$secs"); saved_kib+=("$kib")
  echo "run $run: apply ${apply[-1]} s; apply SAVED $secs s; no-op ${noop[-1]} s; plan ${plan[-1]} s"
done

# fastest NAME: the configuration of array NAME with the lowest median, as
# "median configuration".
fastest() {
  local -n all=$1; local k best=""
  for k in "${!all[@]}"; do
    # shellcheck disable=SC2086 # the samples are one space-separated string
    best+="$(median ${all[$k]}) $k"$'\n'
  done
  printf '%s' "$best" | sort -g | head -1
}
read -r m_raw raw_config <<<"$(fastest w_all)"
read -r m_read read_config <<<"$(fastest r_all)"
m_seq=$(median "${seq_read[@]}")
m_apply=$(median "${apply[@]}"); m_saved=$(median "${saved[@]}")
m_noop=$(median "${noop[@]}"); m_plan=$(median "${plan[@]}"); m_planned=$(median "${planned[@]}")

# make-mirror through the link, on few keys: it writes one key per round trip.
if [ "$RTT" != 0 ]; then
  mm_n=1000
  "$TOOL" seed "$SRC" /bench/mm-src/ "$mm_n"
  t=$(now)
  etcdctl --endpoints="$SRC" make-mirror --prefix=/bench/mm-src/ --dest-prefix=/bench/mm/ "$DST" >/dev/null 2>&1 &
  mm=$!
  while [ "$("$TOOL" count "$DST" /bench/mm/)" -lt "$mm_n" ]; do sleep 0.2; done
  mm_secs=$(elapsed "$t")
  kill "$mm"; wait "$mm" 2>/dev/null || true
  "$TOOL" clear "$DST" /bench/mm/
fi

echo
echo "## etcdplan benchmark: $(printf "%'d" "$N") keys of ~200 B, etcd $(etcd --version | head -1 | awk '{print $3}'), $link, median of $RUNS run(s)"
echo
echo "Command: \`bash examples/bench.sh -n $N --runs $RUNS$([ "$RTT" != 0 ] && echo " --rtt $RTT")$([ "$MIRROR" = 1 ] && echo " --mirror")$([ "$SNAPSHOT" = 1 ] && echo " --snapshot")\`"
echo
raw_by=(); for k in "${in_flight[@]}"; do raw_by+=("$k: ${last_w[$k]}"); done
echo "| figure | seconds | vs ceiling | peak RSS |"
echo "| --- | ---: | ---: | ---: |"
echo "| write ceiling: raw pipelined 128-put txns, the fastest median of 4 to 128 in flight on 1 connection and 32 to 128 on 8 ($raw_config; last run, by in flight, x connections: ${raw_by[*]}) | $m_raw | | |"
echo "| read ceiling: both ranges, parallel bounded sub-ranges, the fastest median of 16/32/64 ($read_config) | $m_read | | |"
echo "| one plain paged read of the destination (5,000 keys a page) | $m_seq | | |"
if [ "$MIRROR" = 1 ]; then
  echo "| etcdctl make-mirror | $(median "${mirror[@]}") | $(ratio "$(median "${mirror[@]}")" "$m_raw") | |"
fi
if [ "$RTT" != 0 ]; then
  echo "| etcdctl make-mirror of $mm_n keys | $mm_secs ($(awk -v n="$mm_n" -v s="$mm_secs" 'BEGIN { printf "%.0f", n / s }') keys/s) | | |"
fi
echo "| \`apply PLAN.yaml\` (plan, write and verify overlapped) | $m_apply | $(ratio "$m_apply" "$m_raw") | $(mib "$(median "${apply_kib[@]}")") |"
echo "| \`plan --out SAVED\` (every key a change) | $m_planned | | $(mib "$(median "${planned_kib[@]}")") |"
echo "| \`apply SAVED\` (values from one scan per dense mapping) | $m_saved | $(ratio "$m_saved" "$m_raw") | $(mib "$(median "${saved_kib[@]}")") |"
echo "| \`apply PLAN.yaml\`, no-op rerun (reads only) | $m_noop | $(ratio "$m_noop" "$m_read"); $(ratio "$m_noop" "$m_seq") of the plain read | $(mib "$(median "${noop_kib[@]}")") |"
echo "| \`plan\`, no changes | $m_plan | $(ratio "$m_plan" "$m_read") | $(mib "$(median "${plan_kib[@]}")") |"

if [ "$SNAPSHOT" = 1 ]; then
  # Every key written a second time: the snapshot holds two versions of each.
  "$TOOL" seed "$SRC" /bench/src/ "$N"
  ETCDCTL_API=3 etcdctl --endpoints="$SRC" snapshot save "$work/snap.db" >/dev/null 2>&1
  size=$(stat -c %s "$work/snap.db")
  restore=(); splan=(); splan_kib=(); sapply=(); sapply_kib=()
  printf 'version: 1\nname: bench-snapshot\nsource:\n  snapshot: %s\ndestination:\n  endpoints: [%s]\nprefixes:\n  - from: /bench/src/\n    to: /bench/snap/\n' \
    "$work/snap.db" "$DST" >"$work/snapshot.yaml"
  if command -v etcdutl >/dev/null; then restore_cmd=(etcdutl); else restore_cmd=(env ETCDCTL_API=3 etcdctl); fi
  # The destination as empty as the write ceiling found it: the saved
  # apply left N keys under /bench/ep/, and writes into a fuller keyspace
  # are slower (measured: 1,000,000 raw writes beside 1,000,000 other keys
  # took 7.6-8.1 s, against 6.0-7.3 s into an empty one).
  "$TOOL" clear "$DST" /bench/ep/
  for run in $(seq "$RUNS"); do
    rm -rf "$work/restored"
    timed "${restore_cmd[@]}" snapshot restore "$work/snap.db" --data-dir "$work/restored" >/dev/null 2>&1
    restore+=("$secs")
    "$TOOL" clear "$DST" /bench/snap/
    timed "$BIN" plan "$work/snapshot.yaml" --max-listed 0 >/dev/null
    splan+=("$secs"); splan_kib+=("$kib")
    timed "$BIN" apply "$work/snapshot.yaml" --auto-approve --max-listed 0 >"$work/snap.out" 2>&1 ||
      { cat "$work/snap.out"; exit 1; }
    grep -q "Apply complete" "$work/snap.out" || { cat "$work/snap.out"; exit 1; }
    sapply+=("$secs"); sapply_kib+=("$kib")
  done
  m_restore=$(median "${restore[@]}"); m_splan=$(median "${splan[@]}"); m_sapply=$(median "${sapply[@]}")
  echo "| \`${restore_cmd[*]} snapshot restore\` of the same file ($(mib $((size / 1024)))) | $m_restore | | |"
  echo "| \`plan\` from the snapshot (every key a change) | $m_splan | $(ratio "$m_splan" "$m_restore") of restore | $(mib "$(median "${splan_kib[@]}")") |"
  echo "| \`apply\` from the snapshot into an empty prefix | $m_sapply | $(ratio "$m_sapply" "$m_raw") | $(mib "$(median "${sapply_kib[@]}")") |"
fi

