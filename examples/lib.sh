# Shared by demo.sh and bench.sh: install what a fresh Debian machine lacks,
# find free loopback ports, and start throwaway etcd servers that are
# stopped on exit. Source it after setting `work` to a temp dir.

# install_missing "cmd:package [package…]" …: apt-installs the packages of
# every command that is not on PATH.
install_missing() {
  local need=() pair pkgs
  for pair in "$@"; do
    if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
      read -r -a pkgs <<<"${pair#*:}"
      need+=("${pkgs[@]}")
    fi
  done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "installing ${need[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
}

pids=()
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_servers EXIT

# Free loopback ports: never a server these scripts did not start. They are
# taken below the kernel's ephemeral range: a port that an outgoing
# connection holds cannot be seen by a connect probe, yet fails a bind.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ephemeral_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "${ephemeral_low:-0}" -gt 14000 ] || ephemeral_low=32768
next_port=$((10000 + RANDOM % (ephemeral_low - 12000)))
free_port() { # sets $port; no subshell, so the counter advances
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  port=$next_port
  next_port=$((next_port + 1))
}

# start_etcd NAME SCHEME [etcd flags…]: a one-member cluster with its data
# under $work; sets $url to its client URL once it listens. A port taken
# between the probe and etcd's bind (by anything else on the machine) makes
# etcd exit at once: it is started again on other ports, a few times.
start_etcd() {
  local name=$1 scheme=$2 cp pp pid attempt
  shift 2
  for attempt in 1 2 3 4 5; do
    free_port; cp=$port
    free_port; pp=$port
    rm -rf "$work/$name.etcd"
    etcd --name "$name" --data-dir "$work/$name.etcd" \
      --listen-client-urls "$scheme://127.0.0.1:$cp" --advertise-client-urls "$scheme://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$name=http://127.0.0.1:$pp" --initial-cluster-token "$name-$cp" \
      "$@" >"$work/$name.log" 2>&1 &
    pid=$!
    url="$scheme://127.0.0.1:$cp"
    for _ in $(seq 300); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if ! port_free "$cp"; then pids+=("$pid"); return 0; fi
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "etcd $name did not listen on $cp within 30 s; its log:" >&2
      tail -n 20 "$work/$name.log" >&2
      kill "$pid" 2>/dev/null || true
      return 1
    fi
    wait "$pid" 2>/dev/null || true
    grep -q "address already in use" "$work/$name.log" || break
    echo "etcd $name: a port was taken before it could bind (attempt $attempt); trying others" >&2
  done
  echo "etcd $name did not start; its log:" >&2
  tail -n 20 "$work/$name.log" >&2
  return 1
}
