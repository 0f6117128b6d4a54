#!/bin/sh
# Installs what is missing and builds what is stale; quick when all is there.
# Used by `npm start`, `npm test` and `.ci/run`.
set -eu
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages (Debian 12): the BPF toolchain, libbpf, and what the
#    tests drive (network namespaces, nftables for packet loss).
PKGS="clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool make g++ python3 pkg-config iproute2 nftables util-linux systemtap-sdt-dev nginx wrk openssl curl netcat-openbsd postgresql-15 prometheus apache2-bin apache2-utils golang-go e2fsprogs coreutils"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)"
    exit 1
  fi
  log "installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. npm packages, from the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# 3. BPF objects (make rebuilds only what changed).
make -s -C bpf

# 4. The native addon.
addon=build/Release/kernscope.node
targets=build/Release/hook_targets.node
if [ ! -f "$addon" ] || [ ! -f "$targets" ] || [ addon/kernscope.c -nt "$addon" ] || [ addon/hook-targets.c -nt "$targets" ] || [ binding.gyp -nt "$addon" ]; then
  log "building the native addon"
  npx --no-install node-gyp rebuild --loglevel=error >/dev/null
fi

# 5. TypeScript (incremental), skipped when no source is newer than the last build.
stamp=dist/.tsbuildinfo
if [ ! -f "$stamp" ] || [ -n "$(find src test bench tsconfig.json -newer "$stamp" \( -name '*.ts' -o -name tsconfig.json \) 2>/dev/null | head -n 1)" ]; then
  log "compiling TypeScript"
  npx --no-install tsc -p .
fi
