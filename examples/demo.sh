#!/usr/bin/env bash
# The demo: a real Trident-style migration between two throwaway local etcd
# servers. The source is a plaintext etcd (like the container in the Trident
# pod); the destination is an "external" etcd over TLS with client
# certificates. It seeds the source with Trident state, then runs validate,
# check, plan, apply and plan again, showing every output, and stops the
# servers it started.
#
#   bash examples/demo.sh                              # builds etcdplan from this checkout
#   ETCDPLAN=/usr/local/bin/etcdplan bash examples/demo.sh   # runs an installed binary
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
. examples/lib.sh
if [ -n "${ETCDPLAN:-}" ]; then
  # An installed etcdplan: nothing to build, so no protoc either.
  install_missing "etcd:etcd-server" "etcdctl:etcd-client" "openssl:openssl"
  BIN=$(command -v "$ETCDPLAN") || { echo "demo: ETCDPLAN=$ETCDPLAN is not an executable" >&2; exit 1; }
else
  install_missing "etcd:etcd-server" "etcdctl:etcd-client" "protoc:protobuf-compiler libprotobuf-dev" "openssl:openssl"
  cargo build --quiet --locked --bin etcdplan
  BIN=$PWD/target/debug/etcdplan
fi
echo "etcdplan: $BIN ($("$BIN" --version))"
etcdplan() { "$BIN" "$@"; }

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }

# Certificates for the destination, as in Trident's etcd-client-tls Secret.
mkdir -p "$work/certs"
(
  cd "$work/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=demo etcd CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=demo-$who" \
      -keyout "$who-key.pem" -out "$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%sAuth\n' "$who" >"$who.ext"
    openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 \
      -extfile "$who.ext" -out "$who.pem" 2>/dev/null
  done
)

start_etcd trident-local http; SRC=$url
start_etcd external https --cert-file "$work/certs/server.pem" --key-file "$work/certs/server-key.pem" \
  --trusted-ca-file "$work/certs/ca.pem" --client-cert-auth; DST=$url
# Generous timeouts: a busy machine (a CI runner building in parallel) can
# take seconds to answer, and the demo should wait rather than fail.
src() { etcdctl --command-timeout=30s --endpoints="$SRC" "$@"; }
dst() {
  etcdctl --command-timeout=30s --endpoints="$DST" --cacert "$work/certs/ca.pem" --cert "$work/certs/client.pem" \
    --key "$work/certs/client-key.pem" "$@"
}
# Up to a minute by the clock (one probe may take seconds), and no longer
# than a server lives.
ready=""
deadline=$((SECONDS + 60))
while [ -z "$ready" ] && [ "$SECONDS" -lt "$deadline" ]; do
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || break 2; done
  if src endpoint health >/dev/null 2>&1 && dst endpoint health >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "demo: the etcd servers did not become healthy within a minute, or one exited; their logs:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
fi
echo "source (Trident's local etcd): $SRC    destination (external, TLS): $DST"

# A realistic Trident state: the store version, backends with credentials in
# their JSON config, storage classes, volumes, nodes, snapshots, transactions.
src put /trident/store '{"version":"v1","persistentStoreVersion":"etcdv3"}' >/dev/null
src put /trident/v1/backend/ontapnas_10.0.0.1 '{"name":"ontapnas_10.0.0.1","config":{"version":1,"storageDriverName":"ontap-nas","managementLIF":"10.0.0.1","dataLIF":"10.0.0.2","svm":"svm_nfs","username":"vsadmin","password":"Netapp1!-demo-secret"}}' >/dev/null
src put /trident/v1/backend/solidfire_10.250.118.144 '{"name":"solidfire_10.250.118.144","config":{"version":1,"storageDriverName":"solidfire-san","Endpoint":"https://admin:sf-demo-secret@10.250.118.144/json-rpc/8.0","SVIP":"10.0.0.7:3260","TenantName":"trident"}}' >/dev/null
src put /trident/v1/storageclass/gold '{"version":"1","name":"gold","attributes":{"media":"ssd","provisioningType":"thin","snapshots":"true"},"pools":{"ontapnas_10.0.0.1":["aggr1"]}}' >/dev/null
src put /trident/v1/storageclass/bronze '{"version":"1","name":"bronze","attributes":{"media":"hdd"}}' >/dev/null
for i in 1 2 3 4 5 6; do
  src put "/trident/v1/volume/pvc-0a1b2c3d-000$i" "{\"config\":{\"version\":\"1\",\"name\":\"pvc-0a1b2c3d-000$i\",\"size\":\"${i}073741824\",\"protocol\":\"file\",\"storageClass\":\"gold\",\"accessMode\":\"ReadWriteOnce\"},\"backend\":\"ontapnas_10.0.0.1\",\"pool\":\"aggr1\",\"orphaned\":false}" >/dev/null
done
src put /trident/v1/snapshot/pvc-0a1b2c3d-0001/snap-nightly '{"config":{"name":"snap-nightly","volumeName":"pvc-0a1b2c3d-0001"},"created":"2026-11-22T02:00:00Z","sizeBytes":1048576}' >/dev/null
src put /trident/v1/node/worker-1 '{"name":"worker-1","iqn":"iqn.1993-08.org.debian:01:2f9b4c","ips":["10.0.1.11"]}' >/dev/null
src put /trident/v1/node/worker-2 '{"name":"worker-2","iqn":"iqn.1993-08.org.debian:01:7d1e0a","ips":["10.0.1.12"]}' >/dev/null
src put /trident/v1/txn/pvc-0a1b2c3d-0007 '{"op":"addVolume","config":{"name":"pvc-0a1b2c3d-0007"}}' >/dev/null
# The external cluster already has an older copy of one storage class.
dst put /trident/v1/storageclass/gold '{"version":"1","name":"gold","attributes":{"media":"hdd","provisioningType":"thin","snapshots":"true"},"pools":{"ontapnas_10.0.0.1":["aggr1"]}}' >/dev/null

cp -r "$work/certs" "$work/plan-certs"
cat >"$work/trident-external-etcd.yaml" <<EOF
# yaml-language-server: \$schema=../schemas/plan.schema.json
version: 1
name: trident-external-etcd
source:
  endpoints: [$SRC]
destination:
  endpoints: [$DST]
  tls: { ca: plan-certs/ca.pem, cert: plan-certs/client.pem, key: plan-certs/client-key.pem }
prefixes:
  - from: /trident/
    exclude: [/trident/v1/txn/]     # in-flight transactions stay behind
sensitive: [/trident/v1/backend/]   # backends hold storage credentials
on_conflict: overwrite
EOF
cd "$work"
step cat trident-external-etcd.yaml; cat trident-external-etcd.yaml
step etcdplan validate trident-external-etcd.yaml; etcdplan validate trident-external-etcd.yaml
step etcdplan check trident-external-etcd.yaml; etcdplan check trident-external-etcd.yaml
step etcdplan plan trident-external-etcd.yaml --out plan.saved.json
etcdplan plan trident-external-etcd.yaml --out plan.saved.json
step etcdplan apply plan.saved.json; etcdplan apply plan.saved.json
step etcdplan plan trident-external-etcd.yaml --detailed-exitcode
etcdplan plan trident-external-etcd.yaml --detailed-exitcode
step etcdplan apply trident-external-etcd.yaml --auto-approve   "# a rerun writes nothing"
before=$(dst get / -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
etcdplan apply trident-external-etcd.yaml --auto-approve
after=$(dst get / -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
echo "destination revision before the rerun: $before, after: $after"
if grep -rq "demo-secret" plan.saved.json; then echo "a secret leaked into the saved plan" >&2; exit 1; fi
printf '\nDemo complete: the destination holds Trident state, and no secret was printed.\n'
