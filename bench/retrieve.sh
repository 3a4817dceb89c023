#!/usr/bin/env bash
# C-MOVE of a 1 GiB study that is only NEARLINE (on Garage), to DCMTK storescp, against the
# two things it is made of, measured in the same run on the same servers:
#   (a) a plain GET of the same pack from Garage (boto3), and
#   (b) a C-MOVE of the same study while it was ONLINE.
# Target: NEARLINE C-MOVE <= 1.2 x (a + b).
# Usage: bench/retrieve.sh   (BENCH_RUNS=5 rounds; needs garage, see scripts/garage.sh; DCMTK; boto3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/retrieve-$(date +%s)
export TCP_NODELAY=1 STRATA_LOG=${STRATA_LOG:-warn}
cargo build --release --quiet
strata=$root/target/release/strata
# shellcheck source=scripts/garage.sh
source "$root/scripts/garage.sh"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

mkdir -p "$run"
STARTED_GARAGE=""
pid=""
scp=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$scp" ] && kill "$scp" 2>/dev/null; [ -n "$STARTED_GARAGE" ] && kill "$STARTED_GARAGE" 2>/dev/null; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$run"' EXIT
start_garage "$run/garage"
study_dir=$(workload 1g-single 1 4 128 79)
study=2.25.79.0.0
write_s3_config "[nearline]
cache_size = \"4GiB\""
serve
cli() { "$strata" --config "$run/strata.toml" "$@"; }
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$study_dir"
cli copy --study "$study" --wait >/dev/null
cli verify --study "$study" --wait >/dev/null

scp_port=$(free_port)
mkdir -p "$run/received"
/usr/bin/storescp -aet DEST +B -od "$run/received" "$scp_port" >/dev/null 2>&1 & scp=$!
wait_port "$scp_port"
cli ae add DEST 127.0.0.1 "$scp_port" >/dev/null
# CPU seconds (user + system) the given processes have used so far.
cpu_secs() {
    local ticks total=0 p
    ticks=$(getconf CLK_TCK)
    for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    calc "$total / $ticks"
}
# Moves the study; prints wall seconds, and leaves the CPU seconds Strata, Garage and
# storescp spent meanwhile in $run/move-cpu (2 cores: CPU > wall means both were busy).
move() {
    rm -rf "$run/received" && mkdir -p "$run/received"
    local start cpu_start
    cpu_start=$(cpu_secs "$pid" "$STARTED_GARAGE" "$scp")
    start=$(now)
    /usr/bin/movescu -S -aec STRATA -aem DEST -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$study" 127.0.0.1 "$port"
    calc "$(now) - $start"
    calc "$(cpu_secs "$pid" "$STARTED_GARAGE" "$scp") - $cpu_start" >"$run/move-cpu"
}
count=$(find "$study_dir" -name '*.dcm' | wc -l)
runs=${BENCH_RUNS:-5}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$run/online" && : >"$run/get" && : >"$run/nearline"
for _ in $(seq "$runs"); do
    secs=$(move)
    echo "$secs $(cat "$run/move-cpu") $(find "$run/received" -type f | wc -l)" >>"$run/online"
done

cli delete-online --study "$study" --wait >/dev/null
key=$(python3 -c "import sqlite3; print(sqlite3.connect('$run/strata/index.db').execute(\"select object_key from pack where status = 'ARCHIVED'\").fetchone()[0])")
pack_bytes=$(python3 -c "import sqlite3; print(sqlite3.connect('$run/strata/index.db').execute(\"select size_bytes from pack where status = 'ARCHIVED'\").fetchone()[0])")
get_pack() {
    local garage_start get_secs boto_cpu
    garage_start=$(cpu_secs "$STARTED_GARAGE")
    read -r get_secs boto_cpu < <(python3 - "strata/$key" <<'PY'
import boto3, os, sys, time
s3 = boto3.client("s3", endpoint_url=os.environ["STRATA_TEST_S3_ENDPOINT"], region_name="garage",
                  aws_access_key_id=os.environ["STRATA_TEST_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["STRATA_TEST_S3_SECRET_ACCESS_KEY"])
start = time.time()
body = s3.get_object(Bucket=os.environ["STRATA_TEST_S3_BUCKET"], Key=sys.argv[1])["Body"]
cpu = time.process_time()
while body.read(8 << 20):
    pass
print(f"{time.time() - start:.3f} {time.process_time() - cpu:.3f}")
PY
)
    echo "$get_secs $(calc "$(cpu_secs "$STARTED_GARAGE") - $garage_start + $boto_cpu")"
}
# Each NEARLINE move starts from an empty retrieve cache: Strata is restarted without it.
for _ in $(seq "$runs"); do
    get_pack >>"$run/get"
    kill "$pid" && wait "$pid" 2>/dev/null || true
    rm -rf "$run/strata/retrieve-cache"
    serve
    secs=$(move)
    echo "$secs $(cat "$run/move-cpu") $(find "$run/received" -type f | wc -l)" >>"$run/nearline"
done

col() { awk -v c="$2" '{ print $c }' "$run/$1" | median; }
get_secs=$(col get 1) online_secs=$(col online 1) nearline_secs=$(col nearline 1)
echo "| $count instances, $pack_bytes-byte pack; median of $runs runs (all runs) | seconds | CPU seconds |"
echo "|---|---:|---:|"
printf '| (a) plain GET of the pack (boto3) | %.2f (%s) | %.2f Garage + boto3 |\n' "$get_secs" "$(awk '{ printf "%s ", $1 }' "$run/get")" "$(col get 2)"
printf '| (b) C-MOVE while ONLINE | %.2f (%s) | %.2f Strata + Garage + storescp |\n' "$online_secs" "$(awk '{ printf "%s ", $1 }' "$run/online")" "$(col online 2)"
printf '| C-MOVE while NEARLINE only (fetch, verify, unpack, send) | %.2f (%s) | %.2f Strata + Garage + storescp |\n' "$nearline_secs" "$(awk '{ printf "%s ", $1 }' "$run/nearline")" "$(col nearline 2)"
echo "NEARLINE C-MOVE = $(calc "$nearline_secs / ($get_secs + $online_secs)")x (a + b) by medians (target <= 1.2)"
echo "storescp received per run: ONLINE $(awk '{ printf "%s ", $3 }' "$run/online")/ NEARLINE $(awk '{ printf "%s ", $3 }' "$run/nearline")of $count"
