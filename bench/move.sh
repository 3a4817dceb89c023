#!/usr/bin/env bash
# C-MOVE throughput: a 2,000-instance study moved by Strata to DCMTK storescp, against DCMTK
# storescu sending the same files directly to the same storescp, in the same run.
# Usage: bench/move.sh [MATRIX]   (image rows/columns, default 256: 128 KiB per instance)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
matrix=${1:-256}
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/move-$(date +%s)
export TCP_NODELAY=1
[ -x /usr/bin/storescp ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk >/dev/null; }
cargo build --release --quiet
strata=$root/target/release/strata
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

study=$bench/workloads/move-study-$matrix
if [ ! -f "$study.done" ]; then
    rm -rf "$study"
    "$strata" generate --out "$study" --instances-per-series 500 --series-per-study 4 --matrix "$matrix" --seed 2024 --patient-prefix MOVE >/dev/null
    touch "$study.done"
fi
count=$(find "$study" -name '*.dcm' | wc -l)
mkdir -p "$run"

scp_port=$(free_port)
/usr/bin/storescp --fork -aet DEST -od "$run/received" "$scp_port" >/dev/null 2>&1 & scp=$!
mkdir -p "$run/received"; wait_port "$scp_port"

start=$(now); /usr/bin/storescu -aec DEST +sd +r -nh 127.0.0.1 "$scp_port" "$study"; direct=$(calc "$(now) - $start")

port=$(free_port)
"$strata" --data-dir "$run/strata" ae add DEST 127.0.0.1 "$scp_port" >/dev/null
"$strata" serve --data-dir "$run/strata" --dicom-port "$port" --http-listen "127.0.0.1:$(free_port)" >"$run/strata.log" 2>&1 & pid=$!
wait_port "$port"
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$study"
rm -rf "$run/received"; mkdir -p "$run/received"
start=$(now)
/usr/bin/movescu -S -aec STRATA -aem DEST -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=2.25.2024.0.0 127.0.0.1 "$port"
moved=$(calc "$(now) - $start")
received=$(find "$run/received" -type f | wc -l)
kill "$pid" "$scp"; wait "$pid" 2>/dev/null || true

echo "| transfer of $count instances (${matrix}x${matrix}x16 bit) to storescp | seconds | instances/s |"
echo "|---|---:|---:|"
printf '| storescu direct | %.2f | %.0f |\n' "$direct" "$(calc "$count / $direct")"
printf '| Strata C-MOVE | %.2f | %.0f |\n' "$moved" "$(calc "$count / $moved")"
echo "C-MOVE throughput = $(calc "$direct / $moved")x storescu's (target >= 0.9); storescp received $received of $count"
rm -rf "$run"
