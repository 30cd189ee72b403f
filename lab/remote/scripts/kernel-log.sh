#!/usr/bin/env bash
# The lab host's kernel log since a point in time: the lines that report a kernel problem
# (PATTERN, an extended regex), each with the lines that follow it (its call trace).
#
# usage: kernel-log.sh SINCE_S PATTERN CONTEXT_LINES
# SINCE_S: seconds since boot (/proc/uptime), as a test's span starts.
# Prints "next <seconds>" (where the next span starts), and the matching lines as dmesg
# prints them ("[  12.345678] message"), groups separated by "--".
set -u
since=$1 pattern=$2 context=$3

read -r now _ < /proc/uptime
# A span opened before a reboot of the lab host: the whole log of this boot is after it.
[ "${now%.*}" -lt "${since%.*}" ] && since=0
# A continuation line has no timestamp of its own: it belongs to the last one seen. The next
# span starts after the last line read here (the log's own clock; the uptime when the log is
# empty), so that a line falls in one span only.
{ dmesg | awk -v since="$since" -v now="$now" '
    match($0, /^\[ *[0-9]+\.[0-9]+\]/) { ts = substr($0, 2, RLENGTH - 2) + 0 }
    ts > since + 0
    END { printf "next %.6f\n", (ts > 0 ? ts : now) > "/dev/fd/3" }' |
    grep -E -A "$context" -- "$pattern"; } 3>&1
exit 0
