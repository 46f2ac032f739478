#!/usr/bin/env bash
# The demo: validates every example plan (later steps add a real migration).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
bin=target/debug/etcdplan
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== etcdplan validate on each example plan (with stand-in certificate files)"
for plan in plans/*.yaml; do
  cp "$plan" "$work/"
done
mkdir -p "$work/certs"
for f in ca client; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=demo-$f" -keyout "$work/certs/$f-key.pem" -out "$work/certs/$f.pem" 2>/dev/null
done
export SOURCE_ETCD_PASSWORD=demo DEST_ETCD_PASSWORD=demo
for plan in "$work"/*.yaml; do
  "$bin" validate "$plan"
done
