#!/usr/bin/env bash
# Strata's test command (the README's second command; .ci/run calls only this).
#
# 1. installs what the tests need when it is missing (Debian packages, PyPI, npm), as root;
# 2. uses the PostgreSQL at 127.0.0.1:5432 when it answers, otherwise starts a throwaway one
#    under target/pg with initdb/pg_ctl;
# 3. starts a throwaway Garage (a production S3 server) on loopback under target/garage;
# 4. runs cargo fmt --check, cargo clippy -D warnings, and every test of the workspace.
#
# Garage is built from crates.io with `cargo install garage` the first time (about 10 minutes
# on 2 cores) and reused from ~/.cargo/bin afterwards; STRATA_TEST_GARAGE names another binary.
#
# Environment: STRATA_TEST_PG_URL (use this PostgreSQL admin URL instead of discovering one),
# STRATA_TEST_OWN_PG=1 (start a private PostgreSQL even if one answers on 5432),
# SKIP_INSTALL=1 (don't install anything), CARGO_TEST_ARGS (extra args for cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
log() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_missing() {
    [ "${SKIP_INSTALL:-}" = 1 ] && return 0
    local packages=()
    for tool in storescu storescp echoscu findscu movescu getscu dcmconv dcmcrle dcmcjpeg dcmcjpls dcmdump; do
        [ -x "/usr/bin/$tool" ] || { packages+=(dcmtk); break; }
    done
    command -v psql >/dev/null || packages+=(postgresql-client)
    # The admin UI's browser tests: Debian's chromium, driven by Playwright under Node.js.
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || packages+=(chromium)
    command -v node >/dev/null || packages+=(nodejs)
    command -v npm >/dev/null || packages+=(npm)
    if { [ "${STRATA_TEST_OWN_PG:-}" = 1 ] || ! pg_reachable 127.0.0.1 5432; } && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        packages+=(postgresql)
    fi
    if [ ${#packages[@]} -gt 0 ]; then
        log "installing Debian packages: ${packages[*]}"
        apt_install "${packages[@]}"
    fi
    local node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$node_major" -lt 20 ]; then
        echo "Node.js $node_major is too old: Playwright needs Node.js 20 or later (Debian 13, or NodeSource)" >&2
        return 1
    fi
    if [ ! -d tests/ui/node_modules/playwright-core ]; then
        log "installing playwright-core (npm, exact version from tests/ui/package-lock.json; no browser download)"
        (cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)
    fi
    # The OHIF viewer Strata serves at /viewer/ (pinned, checked; npm registry only here).
    bash scripts/install-viewer.sh target/viewer
    if ! python3 -c 'import pynetdicom' 2>/dev/null; then
        log "installing pynetdicom (PyPI)"
        python3 -m pip install -q pynetdicom
    fi
    if ! python3 -c 'import schemathesis, openapi_spec_validator' 2>/dev/null; then
        log "installing schemathesis and openapi-spec-validator (PyPI): the API's fuzz test"
        python3 -m pip install -q schemathesis openapi-spec-validator
    fi
    if ! python3 -c 'import dicomweb_client, pydicom' 2>/dev/null; then
        log "installing dicomweb-client and pydicom (PyPI): the DICOMweb tests' clients"
        python3 -m pip install -q dicomweb-client pydicom
    fi
    if ! python3 -c 'import boto3' 2>/dev/null; then
        log "installing boto3 (PyPI): the tests' independent S3 reader"
        python3 -m pip install -q boto3
    fi
    if [ -z "$(garage_binary)" ]; then
        log "installing Garage $GARAGE_VERSION from crates.io (once; about 10 minutes)"
        cargo install garage --locked --version "$GARAGE_VERSION" --quiet
    fi
}

# shellcheck source=scripts/garage.sh
source "$root_dir/scripts/garage.sh"

STARTED_PG=()
STARTED_GARAGE=""
cleanup() {
    if [ ${#STARTED_PG[@]} -gt 0 ]; then "${STARTED_PG[@]}" >/dev/null 2>&1 || true; fi
    if [ -n "$STARTED_GARAGE" ]; then kill "$STARTED_GARAGE" 2>/dev/null || true; fi
}
trap cleanup EXIT

drop_old_test_databases() {
    command -v psql >/dev/null || return 0
    psql "$STRATA_TEST_PG_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'strata_t_%'" 2>/dev/null |
        while read -r name; do psql "$STRATA_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true; done
}

install_missing

if [ -z "${STRATA_TEST_PG_URL:-}" ]; then
    if [ "${STRATA_TEST_OWN_PG:-}" != 1 ] && pg_reachable 127.0.0.1 5432 && psql "postgres://root@127.0.0.1:5432/postgres" -qc 'select 1' >/dev/null 2>&1; then
        export STRATA_TEST_PG_URL="postgres://root@127.0.0.1:5432/postgres"
    else
        log "starting a private PostgreSQL under target/pg"
        start_own_postgres
    fi
fi
log "PostgreSQL for tests: $STRATA_TEST_PG_URL"
drop_old_test_databases

log "starting Garage (S3) for tests"
start_garage "$root_dir/target/garage"
log "S3 for tests: $STRATA_TEST_S3_ENDPOINT (bucket $STRATA_TEST_S3_BUCKET)"

# pynetdicom's console scripts are named like DCMTK's; tests call DCMTK by absolute path.
export DCMTK_BIN=/usr/bin
export TCP_NODELAY=1

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
set +e
# shellcheck disable=SC2086
cargo test --workspace --locked ${CARGO_TEST_ARGS:-} 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^test result:' target/test-output.log | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' target/test-output.log | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
drop_old_test_databases
echo
echo "$passed passed, $failed failed"
exit "$status"
