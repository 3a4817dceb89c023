#!/usr/bin/env bash
# What bounds Strata's ingest of small objects: two experiments on bench/ingest.sh's small
# workload (10,000 x ~16 KB), each receiver into a fresh index per run, the variants
# alternating and their order reversed every other round. Neither variant is a mode Strata
# offers; they are measurements.
#
#   sync-commit   Strata on PostgreSQL as it runs (every commit waits for its WAL flush)
#                 against the same with `synchronous_commit = off` set on the benchmark's
#                 database: how much of the time PostgreSQL's own flush at commit takes.
#                 (Without the flush an acknowledged instance could be lost in a crash.)
#   associations  the durable floor, Strata-SQLite and Strata-PG with 4 parallel senders
#                 (bench/ingest.sh's figure) and with 16: every storescu keeps one C-STORE
#                 in flight, so with few senders the time is the latency of one object's
#                 durable path, with many it is what the machine can do.
#
# Prints every run (wall seconds, CPU seconds of Strata and of the PostgreSQL server, the
# machine's context switches per instance) and the medians.
#
# Usage: bench/ingest_bounds.sh [--rounds N] [sync-commit] [associations]   (default: both, 3 rounds)
# Environment: BENCH_DIR (default target/bench), BENCH_PG_URL (admin URL, default
#   postgres://root@127.0.0.1:5432/postgres; required), BENCH_STRATA_BIN (another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rounds=3; experiments=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) shift; rounds=${1:-}; [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a positive number" >&2; exit 2; } ;;
        sync-commit | associations) experiments+=("$1") ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#experiments[@]} -gt 0 ] || experiments=(sync-commit associations)
bench=${BENCH_DIR:-$root/target/bench}
pg_admin=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
export TCP_NODELAY=1
STORESCU=/usr/bin/storescu   # pynetdicom ships a script of the same name
[ -x "$STORESCU" ] || { echo "missing $STORESCU: apt-get install dcmtk" >&2; exit 1; }
psql "$pg_admin" -qc 'select 1' >/dev/null || { echo "PostgreSQL at $pg_admin does not answer (BENCH_PG_URL)" >&2; exit 1; }

if [ -z "${BENCH_STRATA_BIN:-}" ]; then
    echo "building strata (release)"
    cargo build --release --quiet
fi
cargo build --release --quiet -p archive-core --example durable_floor
strata=${BENCH_STRATA_BIN:-$root/target/release/strata}
floor=$root/target/release/examples/durable_floor

source "$root/bench/ingest_lib.sh"   # calc, proc_cpu, pg_cpu, free_port, wait_port, median, workloads
echo "generating workloads"
make_workload small 50 200 90    # the same as bench/ingest.sh's
split_workload small small16 16
instances=$(find "$bench/workloads/small" -name '*.dcm' | wc -l)
settle_after_deletions

# Everything stays until the end: a deletion would slow the next run (ext4's recently_deleted).
run_root=$bench/bounds-$(date +%s); mkdir -p "$run_root"
cleanup() {
    drop_bench_databases
    rm -rf "$run_root"; deleted_files
}
trap cleanup EXIT

context_switches() { awk '/^ctxt/ { print $2 }' /proc/stat; }

declare -A wall strata_cpu server_cpu switches
record() { # key seconds strata-cpu server-cpu switches
    wall[$1]="${wall[$1]:-} $2"; strata_cpu[$1]="${strata_cpu[$1]:-} $3"
    server_cpu[$1]="${server_cpu[$1]:-} $4"; switches[$1]="${switches[$1]:-} $5"
    printf '  %-24s %7.2f s  Strata CPU %6.2f s  PostgreSQL CPU %6.2f s  %5.1f switches/instance\n' "$1" "$2" "$3" "$4" "$5"
}

run_floor() { # senders
    local out=$run_root/floor-$1-$round workload=small seconds x0
    [ "$1" = 4 ] || workload=small$1
    mkdir -p "$out"; x0=$(context_switches)
    seconds=$("$floor" "$bench/workloads/$workload" "$out")
    record "floor-$1" "$seconds" 0 0 "$(calc "($(context_switches) - $x0) / $instances")"
}
run_strata() { # label backend senders [sync-commit-off]
    local dir=$run_root/$1-$round workload=small url name port pid
    [ "$3" = 4 ] || workload=small$3
    mkdir -p "$dir"
    if [ "$2" = sqlite ]; then url="sqlite://$dir/index.db"; else
        name=$(new_bench_database strata_bounds)
        [ -z "${4:-}" ] || psql "$pg_admin" -qc "ALTER DATABASE $name SET synchronous_commit = off" >/dev/null
        url="${pg_admin%/*}/$name"
    fi
    port=$(free_port)
    "$strata" serve --data-dir "$dir" --database-url "$url" --dicom-port "$port" \
        --http-listen "127.0.0.1:$(free_port)" >"$dir.log" 2>&1 & pid=$!
    wait_port "$port"
    local c0 p0 x0 t0 t1
    c0=$(proc_cpu "$pid"); p0=$(pg_cpu); x0=$(context_switches); t0=$(date +%s.%N)
    ls -d "$bench/workloads/$workload"/part* |
        xargs -P "$3" -I{} "$STORESCU" -aec STRATA +sd +r -nh 127.0.0.1 "$port" {} 2>>"$run_root/storescu.err"
    t1=$(date +%s.%N)
    local server=0; [ "$2" = sqlite ] || server=$(calc "$(pg_cpu) - $p0")
    record "$1" "$(calc "$t1 - $t0")" "$(calc "$(proc_cpu "$pid") - $c0")" "$server" \
        "$(calc "($(context_switches) - $x0) / $instances")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_variant() {
    case "$1" in
        pg-durable) run_strata "$1" postgres 4 ;;
        pg-no-wal-flush) run_strata "$1" postgres 4 off ;;
        floor-4) run_floor 4 ;;
        floor-16) run_floor 16 ;;
        sqlite-4 | sqlite-16) run_strata "$1" sqlite "${1#*-}" ;;
        postgres-4 | postgres-16) run_strata "$1" postgres "${1#*-}" ;;
    esac
}
variants=()
for experiment in "${experiments[@]}"; do
    case "$experiment" in
        sync-commit) variants+=(pg-durable pg-no-wal-flush) ;;
        associations) variants+=(floor-4 sqlite-4 postgres-4 floor-16 sqlite-16 postgres-16) ;;
    esac
done
for round in $(seq 1 "$rounds"); do
    order=("${variants[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=(); for ((i = ${#variants[@]} - 1; i >= 0; i--)); do order+=("${variants[$i]}"); done
    fi
    echo "round $round/$rounds ($instances small instances)"
    for variant in "${order[@]}"; do run_variant "$variant"; done
done

echo
echo "| variant | seconds (median) | instances/s | CPU ms / instance (Strata + PostgreSQL) | switches / instance | every run (s) |"
echo "|---|---:|---:|---:|---:|---|"
for key in "${!wall[@]}"; do
    s=$(echo "${wall[$key]}" | median)
    cpu=$(calc "($(echo "${strata_cpu[$key]}" | median) + $(echo "${server_cpu[$key]}" | median)) * 1000 / $instances")
    case "$key" in floor*) cpu="–" ;; esac
    printf '| %s | %.2f | %.0f | %s | %.1f | %s |\n' "$key" "$s" "$(calc "$instances / $s")" "$cpu" \
        "$(echo "${switches[$key]}" | median)" "${wall[$key]# }"
done | sort
echo
echo "storescu error lines: $(grep -c "E: " "$run_root/storescu.err" 2>/dev/null || true)"
