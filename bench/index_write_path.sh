#!/usr/bin/env bash
# The index write path alone, sqlx against direct calls: indexes STUDIES x INSTANCES rows into
# a fresh SQLite index in group-commit batches of 1, 2 and 4 instances (what 1-4 storing
# associations make), once through archive-core's store_batch (sqlx, its SQLite worker
# thread; archive-core/examples/bulk_load.rs) and once with the same statements called
# straight into SQLite (bench/index_write_path.py). Prints CPU, thread switches and bytes
# written per instance for each; ROUNDS rounds, alternating.
# Usage: bench/index_write_path.sh [STUDIES] [INSTANCES_PER_STUDY] [ROUNDS]   (default 50 200 3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
studies=${1:-50}; per_study=${2:-200}; rounds=${3:-3}
run=${BENCH_DIR:-$root/target/bench}/write-path-$(date +%s)
mkdir -p "$run"
cargo build --release --quiet -p archive-core --example bulk_load
for round in $(seq 1 "$rounds"); do
    for batch in 1 2 4; do
        rm -f "$run"/sqlx.db*; : >"$run/sqlx.db"
        printf 'round %s  sqlx    ' "$round"
        "$root/target/release/examples/bulk_load" "sqlite://$run/sqlx.db" "$studies" "$per_study" "$batch" \
            2>/dev/null | grep '^per instance'
        printf 'round %s  direct  ' "$round"
        python3 "$root/bench/index_write_path.py" "$run/direct.db" "$studies" "$per_study" "$batch" \
            | grep '^per instance'
    done
done
rm -rf "$run"
