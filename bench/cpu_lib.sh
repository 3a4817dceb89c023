# CPU time of benchmarked servers, shared by bench/ingest_lib.sh and bench/dicomweb.sh.
# Needs calc (awk arithmetic) defined by the script that sources it.

ticks=$(getconf CLK_TCK)
# CPU seconds (user + system) of a process and of its reaped children (storescp --fork).
proc_cpu() { awk -v t="$ticks" '{ printf "%.3f", ($14 + $15 + $16 + $17) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds of the PostgreSQL server: every postgres process (the postmaster's children's
# times count once they exit). Zero when PostgreSQL is not in use.
pg_cpu() {
    local total=0 pid
    for pid in $(pgrep -x postgres 2>/dev/null); do total=$(calc "$total + $(proc_cpu "$pid")"); done
    echo "$total"
}
