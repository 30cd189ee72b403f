#!/usr/bin/env bash
# Wait for the first byte any task of an agent writes to stdout and print "first_output
# <epoch ns>" (lab host clock). Nomad's logmon writes task stdout to
# <data_dir>/alloc/<alloc>/alloc/logs/<task>.stdout.0; polled every 20 ms.
# usage: first-output.sh DATA_DIR TIMEOUT_S
set -u
data=$1 timeout_s=$2
deadline=$(( $(date +%s) + timeout_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  for f in "$data"/alloc/*/alloc/logs/*.stdout.0; do
    if [ -s "$f" ]; then
      echo "first_output $(date +%s%N)"
      exit 0
    fi
  done
  sleep 0.02
done
echo "last no task wrote to stdout under $data within ${timeout_s}s"
exit 4
