# Shared by bench/ingest.sh and bench/ingest_bounds.sh: sourced with $bench (the benchmark
# directory), $strata (a release build) and $pg_admin (the PostgreSQL server's admin URL) set.

calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
source "$(dirname "${BASH_SOURCE[0]}")/cpu_lib.sh"   # proc_cpu, pg_cpu
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# Median of the numbers on stdin; empty for none (a receiver without that figure).
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The ingest workloads: each is generated once and cached under $bench/workloads/NAME, split
# into part*/ directories by patient, one per parallel sender. Its `.done` file records how it
# was made, so a cached workload of another size (a --quick run's) is made again, never reused.
#
# Deleting thousands of files (replacing a cached workload, a run's data) makes ext4 without a
# journal skip the freed inodes at every file creation for a minute or more (recently_deleted),
# which slows whatever writes next. Deleters call deleted_files; settle_after_deletions, called
# before measuring, waits until 90 s have passed since the last deletion (none if longer ago).
deleted_files() { date +%s >"$bench/.deleted-at"; }
# PostgreSQL databases a run creates ($pg_admin's server), listed in a file because callers
# may run in a subshell, and dropped by drop_bench_databases however the run ends: the server
# may be shared (the test suite uses the same one).
bench_databases=$bench/pg-databases-$$
new_bench_database() { # prefix -> prints the new database's name
    local name; name="$1_$(date +%s)_$RANDOM"
    psql "$pg_admin" -qc "CREATE DATABASE $name" >/dev/null || return 1
    mkdir -p "$bench"; echo "$name" >>"$bench_databases"
    echo "$name"
}
drop_bench_databases() {
    local name
    [ -f "$bench_databases" ] || return 0
    while read -r name; do
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
    done <"$bench_databases"
    rm -f "$bench_databases"
}

settle_after_deletions() {
    local since wait
    since=$(cat "$bench/.deleted-at" 2>/dev/null || echo 0)
    wait=$((since + 90 - $(date +%s)))
    [ "$wait" -gt 0 ] || return 0
    echo "waiting $wait s: files deleted $((90 - wait)) s ago are still 'recently deleted' for ext4"
    sleep "$wait"
}

make_workload() { # name patients instances_per_series matrix
    local dir=$bench/workloads/$1 made="$2 $3 $4"
    [ "$(cat "$dir/.done" 2>/dev/null)" = "$made" ] && return 0
    if [ -e "$dir" ]; then rm -rf "$dir"; deleted_files; fi
    mkdir -p "$dir"
    "$strata" generate --out "$dir/all" --patients "$2" --instances-per-series "$3" --matrix "$4" \
        --seed $((RANDOM + 1)) --patient-prefix "B$1" >/dev/null
    for k in 0 1 2 3; do mkdir -p "$dir/part$k"; done
    local n=0
    for study in $(ls "$dir/all" | sed 's/_.*//' | sort -u); do
        mv "$dir/all/${study}"_* "$dir/part$((n % 4))/"; n=$((n + 1))
    done
    rmdir "$dir/all"; echo "$made" >"$dir/.done"
}

# The files of workload SOURCE spread over N part directories (symbolic links), for N senders.
split_workload() { # source name n
    local dir=$bench/workloads/$2 made
    made="$(cat "$bench/workloads/$1/.done") split $3"
    [ "$(cat "$dir/.done" 2>/dev/null)" = "$made" ] && return 0
    if [ -e "$dir" ]; then rm -rf "$dir"; deleted_files; fi
    mkdir -p "$dir"
    local n=0 f
    for f in "$bench/workloads/$1"/part*/*.dcm; do
        mkdir -p "$dir/part$((n % $3))"; ln -sf "$f" "$dir/part$((n % $3))/"; n=$((n + 1))
    done
    echo "$made" >"$dir/.done"
}
