#!/usr/bin/env bash
# Fault campaign: two Strata nodes on one PostgreSQL (a private one under the run directory,
# so it can be restarted) and a three-node Garage cluster (replication factor 3) behind a
# fault-injecting S3 proxy, all on loopback. bench/faults.py runs the load and the rounds:
#
# - >= 100 rounds (ROUNDS, default 100), each a kill -9 of a Strata node (the owner of a
#   running job when there is one) during ingest, copy, verify, delete-online, restore or
#   NEARLINE retrieval, and its restart; after each: every acknowledged instance indexed, no
#   instance without both its ONLINE file and an ARCHIVED copy, no file row without its file;
# - Garage node 3 killed during a copy round and node 2 during a retrieval round (each back
#   five rounds later);
# - PostgreSQL restarted during ingest (C-STOREs in flight wait for it and succeed), and
#   stopped for 40 s, longer than the index's 30 s connection wait (C-STOREs then get a
#   failure status, never an acknowledgement); both nodes store again without a restart;
# - the S3 proxy answering 503, then 500, dropping connections, and stalling, 5 s each;
# - at the end: the queue drains with every job DONE, the scavenger removes the files kills
#   left between rename and commit, every ARCHIVED pack is in the bucket at its size, and
#   every acknowledged instance comes back byte-exact by C-GET.
#
# Usage: bench/faults.sh [ROUNDS]   (needs garage, PostgreSQL's server binaries, pynetdicom,
#        boto3, requests). Writes target/bench/faults-summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export ROUNDS=${1:-${ROUNDS:-100}}
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/faults-$(date +%s)
export TCP_NODELAY=1
cargo build --release --quiet
# shellcheck source=scripts/garage.sh
source "$root/scripts/garage.sh"

mkdir -p "$run"
GARAGE_PIDS=()
pg_stop=()
cleanup() {
    for p in "${GARAGE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -f "garage -c $run/garage" 2>/dev/null || true
    pkill -9 -f "$run/nodes/node-" 2>/dev/null || true
    if [ ${#pg_stop[@]} -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
    if [ "${KEEP:-}" = 1 ]; then echo "kept $run" >&2; else rm -rf "$run"; fi
}
trap cleanup EXIT

# A private PostgreSQL (initdb refuses root: run it as postgres).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_port=$(free_port)
mkdir -p "$run/pg"
run_as=()
if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$run/pg"; run_as=(runuser -u postgres --); fi
"${run_as[@]}" "$pg_bin/initdb" -D "$run/pg/data" -U postgres --auth=trust >/dev/null
pg_options="-p $pg_port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200"
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$run/pg/data" -l "$run/pg/log" -w -o "$pg_options" start >/dev/null
pg_stop=("${run_as[@]}" "$pg_bin/pg_ctl" -D "$run/pg/data" -m fast stop)
psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -qc "CREATE DATABASE strata_faults" >/dev/null
export PG_URL="postgres://postgres@127.0.0.1:$pg_port/strata_faults"
export PG_RESTART="${run_as[*]} $pg_bin/pg_ctl -D $run/pg/data -m fast -w restart >/dev/null"
export PG_STOP="${run_as[*]} $pg_bin/pg_ctl -D $run/pg/data -m fast -w stop >/dev/null"
export PG_START="${run_as[*]} $pg_bin/pg_ctl -D $run/pg/data -l $run/pg/log -w -o '$pg_options' start >/dev/null"

start_garage_cluster "$run/garage" 3
export GARAGE_PID_LIST="${GARAGE_PIDS[*]}"
export GARAGE_DIR="$run/garage" GARAGE="$STRATA_TEST_GARAGE"
export S3_ENDPOINT="$STRATA_TEST_S3_ENDPOINT" S3_BUCKET="$STRATA_TEST_S3_BUCKET"
export S3_KEY_ID="$STRATA_TEST_S3_ACCESS_KEY_ID" S3_SECRET="$STRATA_TEST_S3_SECRET_ACCESS_KEY"

export STRATA=$root/target/release/strata RUN="$run/nodes" CORPUS="$run/corpus"
"$STRATA" generate --out "$CORPUS" --patients 1 --series-per-study 1 --instances-per-series 4 \
    --matrix 64 --seed 99 --patient-prefix FAULTS >/dev/null
mkdir -p "$RUN"
status=0
python3 "$root/bench/faults.py" || status=$?
cp "$run/faults-summary.json" "$bench/faults-summary.json" 2>/dev/null || true
exit "$status"
