#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks (etcd, etcdctl,
# protoc), then runs every check CI runs: formatting, clippy, and the whole
# test suite against real etcd servers that the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian's etcd-server package may start a system etcd on :2379; the tests
# never use it (they start their own servers on free ports).

etcd --version | head -1
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The README's first command must keep working too.
bash examples/demo.sh >/dev/null
echo "demo: ok"
cargo test --locked
