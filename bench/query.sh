#!/usr/bin/env bash
# C-FIND latency on a large index: loads STUDIES studies x INSTANCES instances into a fresh
# index of each backend (through the same batch path C-STORE uses, no files), starts Strata
# on it, and measures study-level C-FIND by Patient ID and by a 30-day date range (p50, p99)
# from one association.
# Usage: bench/query.sh [STUDIES] [INSTANCES_PER_STUDY] [QUERIES]   (default 10000 100 500)
# Environment: BENCH_PG_URL (admin URL; default postgres://root@127.0.0.1:5432/postgres),
#   BENCH_BACKENDS (default: sqlite, and postgres when reachable),
#   BENCH_STRATA_BIN and BENCH_BULK_LOAD_BIN (default: the release builds of this checkout;
#   set both to an earlier commit's builds to compare: its bulk_load writes its own schema).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
studies=${1:-10000}; per_study=${2:-100}; queries=${3:-500}
pg_admin=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/query-$(date +%s)
mkdir -p "$run"
cargo build --release --quiet
cargo build --release --quiet -p archive-core --example bulk_load
cargo build --release --quiet -p dicom-scp --example find_latency
strata=${BENCH_STRATA_BIN:-$root/target/release/strata}
bulk_load=${BENCH_BULK_LOAD_BIN:-$root/target/release/examples/bulk_load}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

backends="sqlite"
psql "$pg_admin" -qc 'select 1' >/dev/null 2>&1 && backends="sqlite postgres"
backends=${BENCH_BACKENDS:-$backends}
for backend in $backends; do
    if [ "$backend" = sqlite ]; then
        url="sqlite://$run/index.db"
    else
        name="strata_query_bench_$(date +%s)"
        psql "$pg_admin" -qc "CREATE DATABASE $name" >/dev/null
        url="${pg_admin%/*}/$name"
    fi
    echo "== $backend: loading $studies studies x $per_study instances"
    "$bulk_load" "$url" "$studies" "$per_study" 2>/dev/null
    # PostgreSQL: autovacuum's first pass over a million fresh rows would otherwise run during
    # the queries (an archive in service finished it long ago) and move p50 by 20 % or more
    # from run to run. Strata never ANALYZEs SQLite, so SQLite is measured as loaded.
    [ "$backend" = postgres ] && psql "$url" -qc 'VACUUM ANALYZE' >/dev/null
    port=$(free_port)
    "$strata" serve --data-dir "$run/$backend" --database-url "$url" --dicom-port "$port" \
        --http-listen "127.0.0.1:$(free_port)" >"$run/$backend.log" 2>&1 & pid=$!
    wait_port "$port"
    "$root/target/release/examples/find_latency" 127.0.0.1 "$port" "$queries" "$studies"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$backend" = postgres ] && psql "$pg_admin" -qc "DROP DATABASE $name" >/dev/null
done
echo "targets: p50 <= 5 ms, p99 <= 50 ms"
rm -rf "$run"
