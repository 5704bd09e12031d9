#!/bin/sh
# Re-runs every row of benchmarks/README.md, one command per row, on a quiet machine.
# Usage: sh benchmarks/run_table.sh [OUT] [ROW...]   (logs: OUT/ROW.log; default /tmp/cxgw-table)
# BEFORE: an exported tree of an older commit for verify_bench's same-run comparison.
# Each row's command is also runnable alone (copy it from this file or the table).
set -u
OUT=${1:-/tmp/cxgw-table}
[ $# -gt 0 ] && shift
ONLY="$*"
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
row() {
    name=$1; shift
    if [ -n "$ONLY" ] && ! echo " $ONLY " | grep -q " $name "; then return; fi
    echo "== $name: $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $? -> $OUT/$name.log"
}
row xmpp-archive-ours    $PY benchmarks/xmpp_bench.py --archive always --window 5 --seconds 10 --sessions 0
row xmpp-archive-prosody $PY benchmarks/xmpp_bench.py --archive always --window 5 --seconds 10 --sessions 0 --peer prosody
row xmpp-never-ours      $PY benchmarks/xmpp_bench.py --archive never --seconds 10 --sessions 0
row xmpp-never-prosody   $PY benchmarks/xmpp_bench.py --archive never --seconds 10 --sessions 0 --peer prosody
row xmpp-nodes           $PY benchmarks/xmpp_nodes_bench.py --pairs 10 --window 10 --seconds 6
row xmpp-nodes-sm        $PY benchmarks/xmpp_nodes_bench.py --pairs 10 --window 10 --seconds 6 --sm
row muc                  $PY benchmarks/muc_bench.py --members 100 --rounds 5 --burst 3000
row muc-nodes            $PY benchmarks/muc_bench.py --nodes 2 --members 100 --rounds 5 --burst 2000
row mam                  $PY benchmarks/mam_bench.py
row smtp                 $PY benchmarks/smtp_bench.py --count 1000
row smtp-postfix         $PY benchmarks/peers/run_peers.py postfix --repeat 2
row imap                 $PY benchmarks/imap_bench.py --messages 3000
row mbsync               $PY benchmarks/peers/mbsync_pull.py --messages 3000 --repeat 7
row docs                 $PY benchmarks/doc_bench.py --workers 2 --compare --queries
row docs-64              $PY benchmarks/doc_bench.py --workers 2 --compare --queries --concurrency 64
row verify               $PY benchmarks/verify_bench.py
row verify-before-after $PY benchmarks/verify_bench.py --tree ${BEFORE:-/tmp/main_before} --seconds 3 --rounds 3
row login                $PY benchmarks/login_bench.py --syncs 1200 --messages 300
row workday              $PY benchmarks/peers/run_workday.py --accel 10 100 --duration 30 --processes 2
row workday-mail         $PY benchmarks/peers/run_workday.py --accel 100 --duration 20 --processes 2 --only mail
row workday-imap         $PY benchmarks/peers/run_workday.py --accel 100 --duration 20 --processes 2 --only imap
row faults               $PY benchmarks/fault_bench.py --messages 200
