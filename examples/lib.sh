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

# Free loopback ports: never a server these scripts did not start.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$((20000 + RANDOM % 30000))
free_port() { # sets $port; no subshell, so the counter advances
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  port=$next_port
  next_port=$((next_port + 1))
}

# start_etcd NAME SCHEME [etcd flags…]: a one-member cluster with its data
# under $work; sets $url to its client URL.
start_etcd() {
  local name=$1 scheme=$2 cp pp
  shift 2
  free_port; cp=$port
  free_port; pp=$port
  etcd --name "$name" --data-dir "$work/$name.etcd" \
    --listen-client-urls "$scheme://127.0.0.1:$cp" --advertise-client-urls "$scheme://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "$name=http://127.0.0.1:$pp" --initial-cluster-token "$name-$cp" \
    "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  url="$scheme://127.0.0.1:$cp"
}
