#!/usr/bin/env bash
# NEARLINE copy throughput and memory, against the same Garage S3 server in the same run.
#
# 1. 1 GiB of studies (4 studies x 128 CT images of 2 MiB) copied by Strata's copy jobs,
#    against uploading the same bytes as one object with boto3's managed multipart upload
#    (10 threads, 8 MiB parts: what `aws s3 cp` does). Target: Strata >= 0.8x boto3.
# 2. One 2 GiB study (1,024 images) copied by one job: peak RSS of the strata process during
#    that copy (VmHWM, reset just before it). Target: < 200 MB.
#
# Usage: bench/tier.sh          (needs garage, see scripts/garage.sh; DCMTK; boto3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/tier-$(date +%s)
export TCP_NODELAY=1 STRATA_LOG=warn
cargo build --release --quiet
strata=$root/target/release/strata
# shellcheck source=scripts/garage.sh
source "$root/scripts/garage.sh"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

mkdir -p "$run"
STARTED_GARAGE=""
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$STARTED_GARAGE" ] && kill "$STARTED_GARAGE" 2>/dev/null; rm -rf "$run"' EXIT
start_garage "$run/garage"
small=$(workload 1g 4 2 64 77)
big=$(workload 2g 1 4 256 78)

write_s3_config ""

# Queues a copy of every study in the index and waits until all are DONE; prints seconds.
copy_all() {
    local start studies
    studies=$("$strata" --config "$run/strata.toml" jobs list --json >/dev/null; python3 - "$run/strata/index.db" <<'PY'
import sqlite3, sys
for (uid,) in sqlite3.connect(sys.argv[1]).execute("select study_uid from study s where not exists (select 1 from pack p where p.study_fk = s.id)"):
    print(uid)
PY
)
    start=$(now)
    for study in $studies; do "$strata" --config "$run/strata.toml" copy --study "$study" --target garage >/dev/null; done
    while "$strata" --config "$run/strata.toml" jobs list --json | grep -q '"state":"\(QUEUED\|RUNNING\)"'; do sleep 0.1; done
    if "$strata" --config "$run/strata.toml" jobs list --json | grep -q '"state":"FAILED"'; then
        echo "a copy job failed:" >&2; "$strata" --config "$run/strata.toml" jobs list >&2; exit 1
    fi
    calc "$(now) - $start"
}

serve
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$small"
bytes=$(find "$run/strata/online" -type f -name '*' ! -path '*/.incoming/*' -printf '%s\n' | awk '{s+=$1} END {print s}')
strata_secs=$(copy_all)

# The same bytes as one object, boto3's managed multipart upload.
find "$run/strata/online" -type f ! -path '*/.incoming/*' -print0 | sort -z | xargs -0 cat >"$run/all-bytes"
plain_secs=$(python3 - "$run/all-bytes" <<'PY'
import boto3, os, sys, time
s3 = boto3.client("s3", endpoint_url=os.environ["STRATA_TEST_S3_ENDPOINT"], region_name="garage",
                  aws_access_key_id=os.environ["STRATA_TEST_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["STRATA_TEST_S3_SECRET_ACCESS_KEY"])
start = time.time()
s3.upload_file(sys.argv[1], os.environ["STRATA_TEST_S3_BUCKET"], "plain/all-bytes")
print(f"{time.time() - start:.3f}")
PY
)
rm -f "$run/all-bytes"

# Memory: one 2 GiB study, one job.
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$big"
# The study's files (its row's size_bytes holds only what the ingest writer has folded in yet).
big_bytes=$(python3 -c "import sqlite3; print(sqlite3.connect('$run/strata/index.db').execute('select sum(f.size_bytes) from study s join series se on se.study_fk = s.id join instance i on i.series_fk = se.id join file f on f.instance_fk = i.id where not exists (select 1 from pack p where p.study_fk = s.id)').fetchone()[0])")
all_peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
echo 5 >"/proc/$pid/clear_refs" # resets VmHWM: the next peak is the 2 GiB copy's alone
big_secs=$(copy_all)
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

mb() { calc "$1 / 1000000"; }
echo "| copy to Garage (same server, same run) | bytes | seconds | MB/s |"
echo "|---|---:|---:|---:|"
printf '| boto3 upload_file, one object | %s | %.2f | %.0f |\n' "$bytes" "$plain_secs" "$(mb "$bytes / $plain_secs")"
printf '| Strata copy jobs, 4 studies | %s | %.2f | %.0f |\n' "$bytes" "$strata_secs" "$(mb "$bytes / $strata_secs")"
printf '| Strata copy job, one 2 GiB study | %s | %.2f | %.0f |\n' "$big_bytes" "$big_secs" "$(mb "$big_bytes / $big_secs")"
echo "copy throughput = $(calc "$plain_secs / $strata_secs")x boto3's (target >= 0.8)"
echo "peak RSS of strata while copying the 2 GiB study = $(calc "$peak_kb / 1024") MiB (target < 200)"
echo "peak RSS of strata before that (ingest, then 2 copy jobs at once) = $(calc "$all_peak_kb / 1024") MiB"
