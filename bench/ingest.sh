#!/usr/bin/env bash
# Ingest benchmark: the same workloads, sent the same way (4 parallel storescu, TCP_NODELAY=1),
# to DCMTK storescp --fork (writes files, no index), Orthanc (Debian package, SQLite index),
# Strata on SQLite and Strata on PostgreSQL, and Orthanc with its PostgreSQL index plugin on
# the same PostgreSQL (Debian orthanc-postgresql), in one run, beside the durable floor (the
# same files written durably with no network and no index). Prints wall times, instances/s,
# ratios, CPU seconds (user + system) per 1,000 instances of each receiver (its children and,
# for the PostgreSQL receivers, the PostgreSQL server's processes included), what Strata writes
# beyond the objects per instance (SQLite: the index and its WAL, from /proc/PID/io; PostgreSQL:
# WAL bytes), and Strata's peak RSS (16 parallel CT associations; one ~2 GB object).
#
# Usage: bench/ingest.sh [--quick] [--no-big] [--rounds N]
#   --quick     1/10 of each workload (a smoke run of the script itself)
#   --no-big    skip the ~2 GB single-object RSS measurement
#   --rounds N  send each workload to each receiver N times, interleaved, the receivers'
#               order reversed every other round (default 4: an even number weighs both
#               orders alike); the table shows medians, every run is listed (fsync times on
#               a VM are noisy)
# Environment: BENCH_DIR (default target/bench), BENCH_PG_URL (admin URL, default
#   postgres://root@127.0.0.1:5432/postgres; Strata-PG is skipped when unreachable),
#   BENCH_BASELINE_BIN (another strata binary, e.g. a release build of an earlier commit:
#   measured in the same rounds as baseline-sqlite / baseline-postgres, to show what a change
#   costs ingest beside the noise of the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=""; big=1; rounds=4
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-big) big="" ;;
        --rounds) shift; rounds=${1:-}; [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a positive number" >&2; exit 2; } ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
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
orthanc_pg_plugin=/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so
if [ ! -f "$orthanc_pg_plugin" ]; then
    echo "installing orthanc-postgresql (Debian package): Orthanc's PostgreSQL index"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc-postgresql >/dev/null
fi

echo "building strata (release)"
cargo build --release --quiet
cargo build --release --quiet -p archive-core --example durable_floor
strata=$root/target/release/strata
floor=$root/target/release/examples/durable_floor

source "$root/bench/ingest_lib.sh"   # calc, proc_cpu, pg_cpu, free_port, wait_port, median, workloads
trap drop_bench_databases EXIT
# Bytes a process has caused to be written to storage.
proc_written() { awk '/^write_bytes/ { print $2 }' "/proc/$1/io" 2>/dev/null || echo 0; }
# Apparent size of everything below a directory (the objects a receiver stored).
tree_bytes() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
wal_lsn() { psql "$1" -Atc 'SELECT pg_current_wal_lsn()'; }
wal_bytes() { psql "$1" -Atc "SELECT pg_wal_lsn_diff('$3', '$2')"; }
# CPU seconds of this shell's reaped children so far (the durable floor runs as one). `times`
# must run in this shell, not in a $( ) subshell, whose children's times start at zero.
children_cpu_into() { # variable
    times > "$run_root/.times"
    printf -v "$1" '%s' "$(tail -1 "$run_root/.times" | awk '{ gsub(/[ms]/, " "); split($0, f, " "); printf "%.3f", f[1] * 60 + f[2] + f[3] * 60 + f[4] }')"
}

scale=1; [ -n "$quick" ] && scale=10
echo "generating workloads"
make_workload small 50 $((200 / scale)) 90    # 10,000 x ~16 KB in 50 studies
make_workload ct 20 $((100 / scale)) 512      # 2,000 x 512x512x16-bit in 20 studies
split_workload ct ct16 16                     # the same, 16 senders (peak RSS)
settle_after_deletions
count() { find "$bench/workloads/$1" -name '*.dcm' | wc -l; }

send_parallel() { # port workload senders -> seconds
    local start end
    start=$(date +%s.%N)
    ls -d "$bench/workloads/$2"/part* | xargs -P "$3" -I{} "$STORESCU" -aec STRATA +sd +r -nh 127.0.0.1 "$1" {} 2>>"$bench/storescu.err"
    end=$(date +%s.%N)
    calc "$end - $start"
}

declare -A seconds
# The floor: the workload's files written as a durable receiver must (temp file, fdatasync,
# rename, directory fsync), one writer per sender, no network and no index
# (archive-core/examples/durable_floor.rs).
run_floor() { # workload
    local out=$run_root/floor-$1-$round before after; mkdir -p "$out"
    children_cpu_into before
    "$floor" "$bench/workloads/$1" "$out" > "$out.seconds"
    children_cpu_into after
    seconds[durable-floor,$1]=$(cat "$out.seconds")
    cpu[durable-floor,$1]=$(calc "$after - $before")
}
run_storescp() { # workload
    local port out; port=$(free_port); out=$run_root/storescp-$1-$round; mkdir -p "$out"
    /usr/bin/storescp --fork -aet STRATA -od "$out" "$port" & local pid=$!
    wait_port "$port"; local before; before=$(proc_cpu "$pid")
    seconds[storescp,$1]=$(send_parallel "$port" "$1" 4)
    sleep 0.2   # the last forked children are reaped
    cpu[storescp,$1]=$(calc "$(proc_cpu "$pid") - $before")
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_orthanc() { # workload [postgres]
    local port http dir label=orthanc plugins="" pg_conf="" url=""
    port=$(free_port); http=$(free_port)
    if [ "${2:-}" = postgres ]; then
        # Orthanc's PostgreSQL index plugin on the same server Strata-PG uses; files stay on disk.
        label=orthanc-postgres; url=$(fresh_pg_url); local db=${url##*/}
        plugins="\"$orthanc_pg_plugin\""
        pg_conf=", \"PostgreSQL\": { \"EnableIndex\": true, \"EnableStorage\": false, \"Host\": \"127.0.0.1\", \"Port\": 5432, \"Database\": \"$db\", \"Username\": \"${pg_user:-root}\", \"Password\": \"\", \"Lock\": false }"
    fi
    dir=$run_root/$label-$1-$round; mkdir -p "$dir"
    cat > "$dir/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db", "DicomAet": "STRATA",
  "DicomPort": $port, "HttpPort": $http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false, "StorageCompression": false, "Plugins": [ $plugins ]$pg_conf }
JSON
    Orthanc "$dir/orthanc.json" >"$dir/log" 2>&1 & local pid=$!
    wait_port "$port"
    local before pg_before; before=$(proc_cpu "$pid"); pg_before=$(pg_cpu)
    seconds[$label,$1]=$(send_parallel "$port" "$1" 4)
    cpu[$label,$1]=$(calc "$(proc_cpu "$pid") - $before")
    [ -n "$url" ] && cpu[$label,$1]=$(calc "${cpu[$label,$1]} + $(pg_cpu) - $pg_before")
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
start_strata() { # data-dir db-url [binary] -> sets STRATA_PID STRATA_PORT
    STRATA_PORT=$(free_port)
    "${3:-$strata}" serve --data-dir "$1" --database-url "$2" --dicom-port "$STRATA_PORT" \
        --http-listen "127.0.0.1:$(free_port)" >"$1.log" 2>&1 & STRATA_PID=$!
    wait_port "$STRATA_PORT"
}
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
stop_strata() { kill "$STRATA_PID"; wait "$STRATA_PID" 2>/dev/null || true; }
fresh_pg_url() {
    local name; name=$(new_bench_database strata_bench) && echo "${pg_admin%/*}/$name"
}
run_strata() { # backend workload [binary label]
    local label=${4:-strata}
    local dir=$run_root/$label-$1-$2-$round url; mkdir -p "$dir"
    if [ "$1" = sqlite ]; then url="sqlite://$dir/index.db"; else url=$(fresh_pg_url); fi
    start_strata "$dir" "$url" "${3:-$strata}"
    local before written pg_before lsn=""
    before=$(proc_cpu "$STRATA_PID"); written=$(proc_written "$STRATA_PID"); pg_before=$(pg_cpu)
    [ "$1" = postgres ] && lsn=$(wal_lsn "$url")
    seconds[$label-$1,$2]=$(send_parallel "$STRATA_PORT" "$2" 4)
    cpu[$label-$1,$2]=$(calc "$(proc_cpu "$STRATA_PID") - $before")
    local n; n=$(count "$2")
    if [ "$1" = postgres ]; then
        cpu[$label-$1,$2]=$(calc "${cpu[$label-$1,$2]} + $(pg_cpu) - $pg_before")
        extra[$label-$1,$2]=$(calc "$(wal_bytes "$url" "$lsn" "$(wal_lsn "$url")") / $n")
    else
        # Everything Strata wrote beyond the objects themselves: the index, its WAL and checkpoints.
        extra[$label-$1,$2]=$(calc "($(proc_written "$STRATA_PID") - $written - $(tree_bytes "$dir/online")) / $n")
    fi
    rss[$label-$1,$2]=$(peak_rss_mb "$STRATA_PID")
    stop_strata
}
declare -A rss cpu extra
pg_ok=""; psql "$pg_admin" -qc 'select 1' >/dev/null 2>&1 && pg_ok=1
pg_user=$(psql "$pg_admin" -Atc 'select current_user' 2>/dev/null || echo root)

# Every run's seconds, CPU and extra bytes by receiver and workload; the table shows medians.
declare -A runs cpu_runs extra_runs
record() { # receiver workload
    runs[$1,$2]="${runs[$1,$2]:-} ${seconds[$1,$2]}"
    cpu_runs[$1,$2]="${cpu_runs[$1,$2]:-} ${cpu[$1,$2]:-}"
    extra_runs[$1,$2]="${extra_runs[$1,$2]:-} ${extra[$1,$2]:-}"
    printf '  %-17s %s s, CPU %s s%s%s\n' "$1" "${seconds[$1,$2]}" "${cpu[$1,$2]:-?}" \
        "${extra[$1,$2]:+, ${extra[$1,$2]} B/instance beyond the objects}" "${rss[$1,$2]:+ (peak RSS ${rss[$1,$2]} MB)}"
}
# Every receiver of the run, measured in this order in odd rounds and in the reverse order in
# even ones: whichever runs first or right after another may find the machine in another state
# (its page cache, the disk's write-back), and a fixed order turns that into a bias.
receivers=(storescp orthanc)
[ -z "$pg_ok" ] || receivers+=(orthanc-postgres)
receivers+=(durable-floor strata-sqlite)
[ -z "$pg_ok" ] || receivers+=(strata-postgres)
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    receivers+=(baseline-sqlite)
    [ -z "$pg_ok" ] || receivers+=(baseline-postgres)
fi
run_receiver() { # receiver workload
    case "$1" in
        storescp) run_storescp "$2" ;;
        orthanc) run_orthanc "$2" ;;
        orthanc-postgres) run_orthanc "$2" postgres ;;
        durable-floor) run_floor "$2" ;;
        strata-sqlite) run_strata sqlite "$2" ;;
        strata-postgres) run_strata postgres "$2" ;;
        baseline-sqlite) run_strata sqlite "$2" "$BENCH_BASELINE_BIN" baseline ;;
        baseline-postgres) run_strata postgres "$2" "$BENCH_BASELINE_BIN" baseline ;;
    esac
    record "$1" "$2"
}
for round in $(seq 1 "$rounds"); do
    order=("${receivers[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=(); for ((i = ${#receivers[@]} - 1; i >= 0; i--)); do order+=("${receivers[$i]}"); done
    fi
    for workload in small ct; do
        echo "round $round/$rounds, workload $workload ($(count $workload) instances)"
        for receiver in "${order[@]}"; do run_receiver "$receiver" "$workload"; done
    done
done
for key in "${!runs[@]}"; do
    seconds[$key]=$(echo "${runs[$key]}" | median)
    cpu[$key]=$(echo "${cpu_runs[$key]}" | median)
    extra[$key]=$(echo "${extra_runs[$key]:-}" | median)
done

# Peak RSS with 16 parallel CT associations: the CT workload split 16 ways.
echo "RSS: 16 parallel CT associations"
round=rss16; d=$run_root/strata-rss16; mkdir -p "$d"
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
echo "| workload | receiver | seconds (median) | instances/s | vs durable floor | vs storescp | vs Orthanc (same engine) | CPU s / 1,000 | written beyond objects, B/instance | every run (s) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
for workload in small ct; do
    n=$(count "$workload")
    for target in storescp orthanc orthanc-postgres durable-floor strata-sqlite strata-postgres baseline-sqlite baseline-postgres; do
        s=${seconds[$target,$workload]:-}; [ -z "$s" ] && continue
        ips=$(calc "$n / $s")
        vs_floor=$(calc "${seconds[durable-floor,$workload]} / $s")
        vs_scp=$(calc "${seconds[storescp,$workload]} / $s")
        peer=orthanc; [[ "$target" == *postgres ]] && [ -n "${seconds[orthanc-postgres,$workload]:-}" ] && peer=orthanc-postgres
        vs_orthanc=$(calc "${seconds[$peer,$workload]} / $s")
        cpu_k=$(calc "${cpu[$target,$workload]:-0} * 1000 / $n")
        printf '| %s | %s | %.2f | %.0f | %.2fx | %.2fx | %.2fx | %.2f | %s |%s |\n' "$workload" "$target" "$s" "$ips" "$vs_floor" "$vs_scp" "$vs_orthanc" \
            "$cpu_k" "${extra[$target,$workload]:--}" "${runs[$target,$workload]}"
    done
done
echo "CPU: the receiver process and its children; for PostgreSQL receivers plus every postgres"
echo "process. Written beyond objects: SQLite, bytes Strata wrote (/proc/PID/io) minus the bytes"
echo "of the files it stored; PostgreSQL, WAL bytes generated. Orthanc-PG is Strata-PG's peer."
echo
echo "durable-floor: the same files written durably by 4 writers, no network, no index: no"
echo "receiver that makes each object durable before answering can be faster on this machine."
echo "Strata peak RSS: 16 parallel CT associations ${rss16} MB; one ~2 GB object ${rss_big:-not measured (--no-big)}${rss_big:+ MB}"
echo "storescu error lines: $(grep -c "E: " "$bench/storescu.err" 2>/dev/null || true)"
# Delete this run's data only now (see run_root above), keeping the generated workloads.
rm -rf "$run_root"; deleted_files
