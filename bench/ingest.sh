#!/usr/bin/env bash
# Ingest benchmark: the same workloads, sent the same way (4 parallel storescu, TCP_NODELAY=1),
# to DCMTK storescp --fork (writes files, no index), Orthanc (Debian package, SQLite index),
# Strata on SQLite and Strata on PostgreSQL, in one run. Prints wall times, instances/s,
# ratios, and Strata's peak RSS (16 parallel CT associations; one ~2 GB object).
#
# Usage: bench/ingest.sh [--quick] [--no-big]
#   --quick   1/10 of each workload (a smoke run of the script itself)
#   --no-big  skip the ~2 GB single-object RSS measurement
# Environment: BENCH_DIR (default target/bench), BENCH_PG_URL (admin URL, default
#   postgres://root@127.0.0.1:5432/postgres; Strata-PG is skipped when unreachable).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=""; big=1
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --no-big) big="" ;;
        *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done
bench=${BENCH_DIR:-$root/target/bench}
# Each run writes into a new directory and old runs are deleted only at the end: creating
# thousands of files right after deleting thousands makes ext4's inode allocator scan the
# recently freed ones (recently_deleted), which slowed whichever server ran next by ~25 %.
run_root=$bench/run-$(date +%s)
pg_admin=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
export TCP_NODELAY=1
STORESCU=/usr/bin/storescu   # pynetdicom ships a script of the same name

need() { command -v "$1" >/dev/null || [ -x "$1" ] || { echo "missing $1: $2" >&2; exit 1; }; }
if ! [ -x /usr/bin/storescp ] || ! command -v Orthanc >/dev/null; then
    echo "installing dcmtk and orthanc (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk orthanc >/dev/null
fi
need /usr/bin/storescp "apt-get install dcmtk"
need Orthanc "apt-get install orthanc"

echo "building strata (release)"
cargo build --release --quiet
strata=$root/target/release/strata

calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# Workloads: generated once, split into 4 directories by patient for 4 parallel senders.
make_workload() { # name patients instances_per_series matrix
    local dir=$bench/workloads/$1
    [ -f "$dir/.done" ] && return 0
    rm -rf "$dir"; mkdir -p "$dir"
    "$strata" generate --out "$dir/all" --patients "$2" --instances-per-series "$3" --matrix "$4" \
        --seed $((RANDOM + 1)) --patient-prefix "B$1" >/dev/null
    for k in 0 1 2 3; do mkdir -p "$dir/part$k"; done
    local n=0
    for study in $(ls "$dir/all" | sed 's/_.*//' | sort -u); do
        mv "$dir/all/${study}"_* "$dir/part$((n % 4))/"; n=$((n + 1))
    done
    rmdir "$dir/all"; touch "$dir/.done"
}
scale=1; [ -n "$quick" ] && scale=10
echo "generating workloads"
make_workload small 50 $((200 / scale)) 90    # 10,000 x ~16 KB in 50 studies
make_workload ct 20 $((100 / scale)) 512      # 2,000 x 512x512x16-bit in 20 studies
count() { find "$bench/workloads/$1" -name '*.dcm' | wc -l; }

send_parallel() { # port workload senders -> seconds
    local start end
    start=$(date +%s.%N)
    ls -d "$bench/workloads/$2"/part* | xargs -P "$3" -I{} "$STORESCU" -aec STRATA +sd +r -nh 127.0.0.1 "$1" {} 2>>"$bench/storescu.err"
    end=$(date +%s.%N)
    calc "$end - $start"
}

declare -A seconds
run_storescp() { # workload
    local port out; port=$(free_port); out=$run_root/storescp-$1; mkdir -p "$out"
    /usr/bin/storescp --fork -aet STRATA -od "$out" "$port" & local pid=$!
    wait_port "$port"; seconds[storescp,$1]=$(send_parallel "$port" "$1" 4)
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_orthanc() { # workload
    local port http dir; port=$(free_port); http=$(free_port); dir=$run_root/orthanc-$1; mkdir -p "$dir"
    cat > "$dir/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db", "DicomAet": "STRATA",
  "DicomPort": $port, "HttpPort": $http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false, "StorageCompression": false, "Plugins": [] }
JSON
    Orthanc "$dir/orthanc.json" >"$dir/log" 2>&1 & local pid=$!
    wait_port "$port"; seconds[orthanc,$1]=$(send_parallel "$port" "$1" 4)
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
start_strata() { # data-dir db-url -> sets STRATA_PID STRATA_PORT
    STRATA_PORT=$(free_port)
    "$strata" serve --data-dir "$1" --database-url "$2" --dicom-port "$STRATA_PORT" \
        --http-listen "127.0.0.1:$(free_port)" >"$1.log" 2>&1 & STRATA_PID=$!
    wait_port "$STRATA_PORT"
}
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
stop_strata() { kill "$STRATA_PID"; wait "$STRATA_PID" 2>/dev/null || true; }
fresh_pg_url() {
    local name; name="strata_bench_$(date +%s)_$RANDOM"
    psql "$pg_admin" -qc "CREATE DATABASE $name" >/dev/null && echo "${pg_admin%/*}/$name"
}
run_strata() { # backend workload
    local dir=$run_root/strata-$1-$2 url; mkdir -p "$dir"
    if [ "$1" = sqlite ]; then url="sqlite://$dir/index.db"; else url=$(fresh_pg_url); fi
    start_strata "$dir" "$url"
    seconds[strata-$1,$2]=$(send_parallel "$STRATA_PORT" "$2" 4)
    rss[strata-$1,$2]=$(peak_rss_mb "$STRATA_PID")
    stop_strata
}
declare -A rss
pg_ok=""; psql "$pg_admin" -qc 'select 1' >/dev/null 2>&1 && pg_ok=1

for workload in small ct; do
    echo "workload $workload ($(count $workload) instances)"
    run_storescp "$workload"; echo "  storescp      ${seconds[storescp,$workload]} s"
    run_orthanc "$workload";  echo "  orthanc       ${seconds[orthanc,$workload]} s"
    run_strata sqlite "$workload"; echo "  strata-sqlite ${seconds[strata-sqlite,$workload]} s (peak RSS ${rss[strata-sqlite,$workload]} MB)"
    if [ -n "$pg_ok" ]; then
        run_strata postgres "$workload"; echo "  strata-pg     ${seconds[strata-postgres,$workload]} s (peak RSS ${rss[strata-postgres,$workload]} MB)"
    fi
done

# Peak RSS with 16 parallel CT associations: the CT workload split 16 ways.
echo "RSS: 16 parallel CT associations"
dir16=$bench/workloads/ct16
if [ ! -f "$dir16/.done" ]; then
    rm -rf "$dir16"; mkdir -p "$dir16"; n=0
    for f in "$bench"/workloads/ct/part*/*.dcm; do mkdir -p "$dir16/part$((n % 16))"; ln -sf "$f" "$dir16/part$((n % 16))/"; n=$((n + 1)); done
    touch "$dir16/.done"
fi
d=$run_root/strata-rss16; mkdir -p "$d"
start_strata "$d" "sqlite://$d/index.db"
s16=$(send_parallel "$STRATA_PORT" ct16 16)
rss16=$(peak_rss_mb "$STRATA_PID"); stop_strata
echo "  16 associations: ${s16} s, peak RSS ${rss16} MB (target <= 150)"

rss_big=""
if [ -n "$big" ]; then
    echo "RSS: one ~2 GB object"
    bigdir=$bench/workloads/big
    if [ ! -f "$bigdir/.done" ]; then
        rm -rf "$bigdir"; "$strata" generate --out "$bigdir" --kind mf --matrix 512 --frames 4000 \
            --instances-per-series 1 --seed 4242 --patient-prefix BIG >/dev/null && touch "$bigdir/.done"
    fi
    d=$run_root/strata-big; mkdir -p "$d"
    start_strata "$d" "sqlite://$d/index.db"
    "$STORESCU" -aec STRATA 127.0.0.1 "$STRATA_PORT" "$bigdir"/*.dcm
    rss_big=$(peak_rss_mb "$STRATA_PID"); stop_strata
    echo "  $(du -h "$bigdir"/*.dcm | cut -f1) object: peak RSS ${rss_big} MB (target < 200)"
fi

echo
echo "| workload | sender | seconds | instances/s | vs storescp | vs Orthanc |"
echo "|---|---|---:|---:|---:|---:|"
for workload in small ct; do
    n=$(count "$workload")
    for target in storescp orthanc strata-sqlite strata-postgres; do
        s=${seconds[$target,$workload]:-}; [ -z "$s" ] && continue
        ips=$(calc "$n / $s")
        vs_scp=$(calc "${seconds[storescp,$workload]} / $s")
        vs_orthanc=$(calc "${seconds[orthanc,$workload]} / $s")
        printf '| %s | %s | %.1f | %.0f | %.2fx | %.2fx |\n' "$workload" "$target" "$s" "$ips" "$vs_scp" "$vs_orthanc"
    done
done
echo
echo "Strata peak RSS: 16 parallel CT associations ${rss16} MB; one ~2 GB object ${rss_big:-not measured} MB"
echo "storescu error lines: $(grep -c "E: " "$bench/storescu.err" 2>/dev/null || true)"
# Delete this run's data only now (see run_root above), keeping the generated workloads.
rm -rf "$run_root"
