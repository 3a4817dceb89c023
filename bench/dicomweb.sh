#!/usr/bin/env bash
# DICOMweb benchmark: Strata against Orthanc with its DICOMweb plugin (Debian packages orthanc
# and orthanc-dicomweb), in one run, on the same corpus, measured by the same client
# (bench/dicomweb_client.py: Python requests, one keep-alive session per client).
#
# Each server starts empty, gets the same 2,000 CT instances (4 studies x 1 series x 500,
# 512x512 16-bit) by C-STORE (4 parallel storescu, TCP_NODELAY=1), then:
#   QIDO-RS   study search by PatientID and by a PatientName wildcard (p50 of N each)
#   metadata  series /metadata of a 500-instance series (p50 of N)
#   WADO-RS   whole-study retrieval, transfer-syntax=*, every study per round (MB/s, median)
#   STOW-RS   another 2,000 instances posted by 4 clients (one per study) in batches of 25
#             (instances/s over the wall time; the same prebuilt bodies for every server),
#             and the server's CPU per instance meanwhile (Strata on PostgreSQL: with
#             PostgreSQL's), which varies far less than the rate on these VMs
# Every answer is checked (the study found, 500 metadata items, 500 parts with the right
# UIDs, STOW 200 without FailedSOPSequence and every instance counted by QIDO afterwards),
# so a server that answers wrongly fails the run instead of looking fast.
# Targets: metadata >= 10x faster than Orthanc, QIDO >= 3x, WADO-RS >= 2x, STOW-RS >= 2x.
#
# Rounds: every server is measured BENCH_ROUNDS times (default 4), each time from empty, in an
# order that is reversed every other round (Orthanc first, then last, ...); an even number
# gives both orders the same weight in the medians. A single pass had an
# order effect: whichever server ran second had the lower QIDO p50 and whichever ran first the
# higher STOW-RS rate, whatever the build. The table compares medians over the rounds and lists
# every round's ratio.
#
# Usage: bench/dicomweb.sh
# Environment:
#   BENCH_STRATA_BIN    strata binary to measure (default: cargo build --release, target/release/strata)
#   BENCH_BASELINE_BIN  another strata binary (e.g. a release build of an earlier commit) measured
#                       in the same run on every backend, rows labelled baseline-<backend>
#   BENCH_DIR           runs and cached workloads (default target/bench; workloads in $BENCH_DIR/workloads)
#   BENCH_KEEP          set: keep the run directory (server data, logs, results) and PostgreSQL databases
#   BENCH_INSTANCES     instances per corpus, a multiple of 4 (default 2000: 4 series of 500)
#   BENCH_MATRIX        image rows/columns (default 512)
#   BENCH_QIDO          searches of each kind (default 200)
#   BENCH_METADATA      series /metadata requests (default 20)
#   BENCH_WADO_ROUNDS   WADO-RS rounds, each retrieving every study (default 3)
#   BENCH_STOW_BATCH    instances per STOW-RS request (default 25)
#   BENCH_ROUNDS        rounds of every server, the order reversed every other round (default 4)
#   BENCH_BACKENDS      Strata index backends (default: sqlite, and postgres when reachable)
#   BENCH_PG_URL        PostgreSQL admin URL (default postgres://root@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ $# -eq 0 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/dicomweb-$(date +%s)
instances=${BENCH_INSTANCES:-2000}
matrix=${BENCH_MATRIX:-512}
qido_n=${BENCH_QIDO:-200}
metadata_n=${BENCH_METADATA:-20}
wado_rounds=${BENCH_WADO_ROUNDS:-3}
stow_batch=${BENCH_STOW_BATCH:-25}
rounds=${BENCH_ROUNDS:-4}
pg_admin=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
for v in instances matrix qido_n metadata_n wado_rounds stow_batch rounds; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive number, not '${!v}'" >&2; exit 2; }
done
[ $((instances % 4)) -eq 0 ] || { echo "BENCH_INSTANCES must be a multiple of 4" >&2; exit 2; }
per_series=$((instances / 4))
export TCP_NODELAY=1 STRATA_LOG=${STRATA_LOG:-warn}
STORESCU=/usr/bin/storescu   # pynetdicom ships a script of the same name
client=$root/bench/dicomweb_client.py

plugin() { dpkg -L orthanc-dicomweb 2>/dev/null | grep -m1 '/plugins/libOrthancDicomWeb\.so$' || true; }
if ! [ -x "$STORESCU" ] || ! command -v Orthanc >/dev/null || [ -z "$(plugin)" ]; then
    echo "installing dcmtk, orthanc and orthanc-dicomweb (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk orthanc orthanc-dicomweb >/dev/null
fi
orthanc_plugin=$(plugin)
[ -x "$STORESCU" ] || { echo "missing $STORESCU: apt-get install dcmtk" >&2; exit 1; }
command -v Orthanc >/dev/null || { echo "missing Orthanc: apt-get install orthanc" >&2; exit 1; }
[ -f "$orthanc_plugin" ] || { echo "missing the DICOMweb plugin: apt-get install orthanc-dicomweb" >&2; exit 1; }
python3 -c 'import requests' 2>/dev/null || python3 -m pip install -q requests

if [ -n "${BENCH_STRATA_BIN:-}" ]; then
    strata=$BENCH_STRATA_BIN
else
    echo "building strata (release)"
    cargo build --release --quiet
    strata=$root/target/release/strata
fi
[ -x "$strata" ] || { echo "no strata binary at $strata" >&2; exit 1; }
baseline=${BENCH_BASELINE_BIN:-}
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "no strata binary at BENCH_BASELINE_BIN=$baseline" >&2; exit 1; }

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
source "$root/bench/cpu_lib.sh"   # proc_cpu, pg_cpu
# CPU seconds the server has used so far; for Strata on PostgreSQL, PostgreSQL's too.
server_cpu() { # label
    case "$1" in
        *-postgres) calc "$(proc_cpu "$server_pid") + $(pg_cpu)" ;;
        *) proc_cpu "$server_pid" ;;
    esac
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port; gives up when the server (server_pid) has exited
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited before opening port $1" >&2; return 1; }
        sleep 0.05
    done
    echo "port $1 never opened" >&2; return 1
}

# Everything this run started, undone on any exit.
server_pid=""; server_log=""; pg_dbs=()
cleanup() {
    local status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true
        if [ "$status" -ne 0 ] && [ -f "$server_log" ]; then
            echo "--- last lines of $server_log" >&2; tail -n 20 "$server_log" >&2
        fi
    fi
    if [ -z "${BENCH_KEEP:-}" ]; then
        for db in "${pg_dbs[@]}"; do psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; done
        rm -rf "$run"
    else
        echo "kept $run${pg_dbs[*]:+ and PostgreSQL databases ${pg_dbs[*]}}"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$run"

# Corpora: generated once (cached in $bench/workloads), one directory per study, which is
# what one storescu association and one STOW-RS client send. The STOW-RS bodies are built
# once too, so every server gets the same bytes.
make_workload() { # name seed patient-prefix -> prints its directory
    local dir=$bench/workloads/dicomweb-$1-$instances-$matrix
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir"; mkdir -p "$dir"
        "$strata" generate --out "$dir/all" --patients 4 --series-per-study 1 --instances-per-series "$per_series" \
            --matrix "$matrix" --seed "$2" --patient-prefix "$3" >/dev/null
        local n=0 study
        for study in $(ls "$dir/all" | sed 's/_.*//' | sort -u); do
            mkdir -p "$dir/part$n"; mv "$dir/all/${study}"_* "$dir/part$n/"; n=$((n + 1))
        done
        rmdir "$dir/all"
        python3 "$client" manifest "$dir" "$dir/manifest.json" >/dev/null
        touch "$dir/.done"
    fi
    if [ "$1" = stow ] && [ ! -f "$dir/stow-bodies-$stow_batch.done" ]; then
        rm -rf "$dir/stow-bodies"
        python3 "$client" stow-bodies "$dir" "$dir/manifest.json" "$stow_batch" >/dev/null
        rm -f "$dir"/stow-bodies-*.done; touch "$dir/stow-bodies-$stow_batch.done"
    fi
    echo "$dir"
}
echo "generating workloads ($instances instances each, ${matrix}x$matrix)"
load_dir=$(make_workload load 7101 DWLOAD)
stow_dir=$(make_workload stow 7102 DWSTOW)
corpus_mb=$(calc "$(du -sb "$load_dir"/part* | awk '{ s += $1 } END { print s }') / 1e6")

# Servers: each sets server_pid, dicom_port, dicom_ae, base (DICOMweb root) and DICOMWEB_TOKEN.
start_orthanc() { # dir
    local http; dicom_port=$(free_port); http=$(free_port); dicom_ae=ORTHANC; mkdir -p "$1"
    cat >"$1/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$1/db", "IndexDirectory": "$1/db", "DicomAet": "ORTHANC",
  "DicomPort": $dicom_port, "HttpPort": $http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false, "StorageCompression": false, "HttpCompressionEnabled": false,
  "KeepAlive": true, "TcpNoDelay": true,
  "Plugins": [ "$orthanc_plugin" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
    server_log=$1/orthanc.log
    Orthanc "$1/orthanc.json" >"$server_log" 2>&1 & server_pid=$!
    base=http://127.0.0.1:$http/dicom-web; DICOMWEB_TOKEN=""
    wait_port "$dicom_port"; wait_port "$http"
    # The plugin is loaded when its root answers.
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/dicom+json' "$base/studies")
    [ "$code" = 200 ] || { echo "Orthanc's $base/studies answers $code: is the DICOMweb plugin loaded?" >&2; return 1; }
}
start_strata() { # dir database-url [binary]
    local http binary=${3:-$strata}; dicom_port=$(free_port); http=$(free_port); dicom_ae=STRATA; mkdir -p "$1"
    server_log=$1.log
    "$binary" --data-dir "$1" serve --database-url "$2" --dicom-port "$dicom_port" \
        --http-listen "127.0.0.1:$http" >"$server_log" 2>&1 & server_pid=$!
    base=http://127.0.0.1:$http/dicom-web
    wait_port "$dicom_port"; wait_port "$http"
    for _ in $(seq 1 100); do [ -s "$1/admin-token" ] && break; sleep 0.05; done
    DICOMWEB_TOKEN=$(cat "$1/admin-token")
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
new_pg_database() { # sets url (not run in a subshell: cleanup drops what pg_dbs lists)
    local name; name="strata_dicomweb_$(date +%s)_$RANDOM"
    psql "$pg_admin" -qc "CREATE DATABASE $name" >/dev/null; pg_dbs+=("$name")
    url="${pg_admin%/*}/$name"
}

# The same steps for every server; the results go to $run/<label>.r<round>.json.
measure() { # label round
    local label=$1 round=$2 start seconds load qido metadata wado stow cpu
    export DICOMWEB_TOKEN
    start=$(now)
    ls -d "$load_dir"/part* | xargs -P 4 -I{} "$STORESCU" -aec "$dicom_ae" +sd +r -nh 127.0.0.1 "$dicom_port" {} \
        2>>"$run/storescu-$label.err" || { echo "storescu failed:" >&2; tail -n 5 "$run/storescu-$label.err" >&2; return 1; }
    seconds=$(calc "$(now) - $start")
    load="{\"seconds\": $seconds, \"instances_s\": $(calc "$instances / $seconds")}"
    echo "  C-STORE load (4 storescu): $seconds s"
    python3 "$client" check-load "$base" "$load_dir/manifest.json" >/dev/null
    qido=$(python3 "$client" qido "$base" "$load_dir/manifest.json" "$qido_n")
    metadata=$(python3 "$client" metadata "$base" "$load_dir/manifest.json" "$metadata_n")
    wado=$(python3 "$client" wado "$base" "$load_dir/manifest.json" "$wado_rounds")
    cpu=$(server_cpu "$label")
    stow=$(python3 "$client" stow "$base" "$stow_dir/manifest.json")
    # The server's CPU per stored instance: steadier than instances/s on these VMs.
    cpu=$(calc "($(server_cpu "$label") - $cpu) * 1000 / $instances")
    stow="${stow%\}}, \"cpu_ms\": $cpu}"
    python3 "$client" check-load "$base" "$stow_dir/manifest.json" >/dev/null
    printf '{"label": "%s", "load": %s, "qido": %s, "metadata": %s, "wado": %s, "stow": %s}\n' \
        "$label" "$load" "$qido" "$metadata" "$wado" "$stow" >"$run/$label.r$round.json"
}

backends="sqlite"
psql "$pg_admin" -qc 'select 1' >/dev/null 2>&1 && backends="sqlite postgres"
backends=${BENCH_BACKENDS:-$backends}

echo "client"
python3 "$client" floor "$qido_n" >"$run/floor.json"
echo "Orthanc $(Orthanc --version | head -1 | awk '{print $2}') with $(basename "$(readlink -f "$orthanc_plugin")")"
# Every server of the run, by label; each is measured once per round, from empty.
labels=(Orthanc)
for backend in $backends; do
    case "$backend" in sqlite|postgres) ;; *) echo "unknown backend $backend" >&2; exit 2 ;; esac
    labels+=("strata-$backend")
    [ -z "$baseline" ] || labels+=("baseline-$backend")
done
# Every server-round keeps its ~2 corpora of objects until the run ends (see measure_server).
need_mb=$(calc "$rounds * ${#labels[@]} * $corpus_mb * 2.2")
free_mb=$(df -Pm "$bench" | awk 'NR == 2 { print $4 }')
if awk "BEGIN { exit !($need_mb > $free_mb) }"; then
    echo "this run needs about $need_mb MB free under $bench and has $free_mb MB: lower BENCH_ROUNDS or BENCH_INSTANCES" >&2
    exit 1
fi
measure_server() { # label round
    local label=$1 dir=$run/$1-r$2 binary=$strata
    echo "$label, round $2"
    case "$label" in
        Orthanc) start_orthanc "$dir" ;;
        *)
            case "$label" in baseline-*) binary=$baseline ;; esac
            case "$label" in
                *-sqlite) url="sqlite://$dir/index.db" ;;
                *-postgres) new_pg_database ;;
            esac
            start_strata "$dir" "$url" "$binary" ;;
    esac
    measure "$label" "$2"; stop_server
    # The data stays until the run ends (~2 GB per server and round): ext4 without a journal
    # scans the inodes freed in the last minutes on every file it creates (recently_deleted,
    # 20 % of Strata's STOW-RS CPU right after a deletion), so deleting here would slow
    # whichever server comes next.
}
for round in $(seq 1 "$rounds"); do
    order=("${labels[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=(); for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[$i]}"); done
    fi
    for label in "${order[@]}"; do measure_server "$label" "$round"; done
done

echo
echo "Corpus: $instances CT instances (${matrix}x$matrix, 16-bit; 4 studies x 1 series x $per_series; $corpus_mb MB)" \
    "loaded by C-STORE; STOW-RS: another $instances in batches of $stow_batch. Strata: $strata${baseline:+; baseline: $baseline}"
echo
python3 "$client" table "$run" "${labels[@]}"
