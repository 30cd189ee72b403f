#!/usr/bin/env bash
# Run the guest set-up script (provision/guest-setup.sh, passed as text) unless this very
# script already succeeded on this boot of the lab host: then print its recorded result.
# A warm `lab.up` then costs one round trip here instead of re-checking every package.
# usage: provision-once.sh SCRIPT_SHA256 SCRIPT_TEXT
set -u
sha=$1 script=$2
stamp=${LAB_PROVISION_STAMP:-/var/lib/nomad-lab-provision.stamp}  # overridable for tests
want="$sha $(cat /proc/sys/kernel/random/boot_id)"
if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$want" ]; then
  tail -n +2 "$stamp"
  exit 0
fi
out=$(bash -c "$script" guest-setup.sh 2>&1)
rc=$?
echo "$out"
if [ "$rc" -eq 0 ]; then
  { echo "$want"; echo "$out" | tail -n1; } >"$stamp"
else
  rm -f "$stamp"
fi
exit "$rc"
