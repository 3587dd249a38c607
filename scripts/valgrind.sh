#!/usr/bin/env bash
# Runs the dashboard example (the kata's three scenarios) under valgrind's memcheck, once per
# executor, and summarizes the leak and error counts. Fails if valgrind reports a memory error
# or a definite leak, or if the example itself reports a misbehaving scenario.
#
#   scripts/valgrind.sh                 # --executor inline, then the example's default (smol)
#   scripts/valgrind.sh tokio async-std # any of: inline smol tokio async-std
#
# Expected, and not counted as failures: threads that are never joined keep their stacks,
# handles and thread-local state, which valgrind reports as "possibly lost" / "still
# reachable": futures-timer's global helper thread (every run), async-io's reactor thread with
# smol, and std's handle of the main thread that futures-executor's `block_on` creates lazily.
# The summary names where each "possibly lost" block came from.
# Logs are kept in a temporary directory, printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found (apt-get install valgrind)" >&2
    exit 2
fi
executors=("$@")
if [ ${#executors[@]} -eq 0 ]; then
    executors=(inline smol)
fi

echo "==> cargo build --example dashboard"
binary=$(cargo build --example dashboard --message-format=json-render-diagnostics |
    grep -o '"executable":"[^"]*/dashboard"' | tail -n 1 | cut -d'"' -f4)
if [ ! -x "$binary" ]; then
    echo "could not find the dashboard binary" >&2
    exit 2
fi
logs=$(mktemp -d "${TMPDIR:-/tmp}/failfast-valgrind.XXXXXX")
echo "    $binary ($(valgrind --version))"

# "N bytes in M blocks" of one leak kind from the LEAK SUMMARY, as "N B / M blocks".
leak() {
    local line
    line=$(grep -E "==[0-9]+==\s+$1:" "$2" | tail -n 1 || true)
    if [ -z "$line" ]; then
        echo "0 B / 0 blocks" # no leak summary: nothing was lost
    else
        echo "$line" | sed -E 's/.*: ([0-9,]+) bytes in ([0-9,]+) blocks.*/\1 B \/ \2 blocks/'
    fi
}

# For each "possibly lost" record, the first frame from a crate or the thread machinery.
origins() {
    awk '
        /are possibly lost in loss record/ { inside = 1; found = ""; next }
        inside && /^==[0-9]+== *$/ {
            print (found == "" ? "(unknown)" : found); inside = 0; next
        }
        inside && found == "" && /(at|by) 0x/ {
            frame = $0
            sub(/.*: /, "", frame)
            sub(/ \(.*/, "", frame)
            if (frame ~ /futures_timer|futures_executor|async_io|blocking|smol|async_std|async_global_executor|tokio|failfast/) {
                found = frame
            }
        }
    ' "$1" | sed -E 's/::\{\{closure\}\}//g; s/<[^<>]*>//g' | sort | uniq -c | sed 's/^/      /'
}

status=0
summary=()
for executor in "${executors[@]}"; do
    log="$logs/$executor.valgrind.log"
    out="$logs/$executor.out"
    echo "==> valgrind ... $binary --executor $executor"
    set +e
    RUST_LOG=failfast=warn valgrind --leak-check=full --errors-for-leak-kinds=definite \
        --error-exitcode=1 --num-callers=40 --log-file="$log" \
        "$binary" --executor "$executor" >"$out" 2>&1
    code=$?
    set -e
    errors=$(grep -E "ERROR SUMMARY:" "$log" | tail -n 1 | sed -E 's/.*ERROR SUMMARY: ([0-9,]+) errors.*/\1/')
    verdict="ok"
    if [ "${errors:-?}" != "0" ]; then
        verdict="FAILED: valgrind errors"
        status=1
    elif [ "$code" -ne 0 ]; then
        verdict="FAILED: the example exited $code (see $out)"
        status=1
    fi
    sed 's/^/    /' "$out" | grep -vE '^\s+\[.*(DEBUG|WARN|INFO)' || true
    echo "    exit code:       $code"
    echo "    errors:          ${errors:-?}"
    echo "    definitely lost: $(leak "definitely lost" "$log")"
    echo "    indirectly lost: $(leak "indirectly lost" "$log")"
    echo "    possibly lost:   $(leak "possibly lost" "$log")"
    origins "$log"
    echo "    still reachable: $(leak "still reachable" "$log")"
    summary+=("$(printf '%-10s exit %s, errors %s, definitely lost %s, possibly lost %s: %s' \
        "$executor" "$code" "${errors:-?}" "$(leak "definitely lost" "$log")" \
        "$(leak "possibly lost" "$log")" "$verdict")")
done

echo
echo "==> summary (logs in $logs)"
printf '    %s\n' "${summary[@]}"
exit $status
