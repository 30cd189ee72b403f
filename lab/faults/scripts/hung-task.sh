#!/bin/bash
# A real hung task: a writer blocked on a suspended device-mapper device, which the kernel's
# hung-task detector reports after kernel.hung_task_timeout_secs. Its fsync waits for the
# page's writeback in plain TASK_UNINTERRUPTIBLE. (A reader would not do: an O_DIRECT read
# waits in submit_bio_wait(), which wakes every timeout/2 precisely to stay unreported, and a
# buffered read waits killable, which the detector skips. Measured: 215 s in D state, no line.)
# usage: hung-task.sh timeout | fit | add NAME SECONDS | del NAME SECONDS | present NAME |
#        gone NAME | scan | sweep
set -u
prefix=lab-fault-  # every device this fault creates is named so
default_timeout=120  # the kernel's default: a shorter one left behind would flag slow I/O
sysctl_dir=${LAB_PROC_SYS:-/proc/sys}/kernel  # overridden by the unit tests' sandbox
timeout_file=$sysctl_dir/hung_task_timeout_secs

remove() {  # NAME: resume it (the blocked write completes), then remove it
  dmsetup resume "$1" 2>/dev/null
  dmsetup remove --retry "$1"
}

sub=${1:-}
shift
case $sub in
  timeout) cat "$timeout_file" ;;
  fit)
    command -v dmsetup >/dev/null || { echo "dmsetup is not installed" >&2; exit 3; }
    [ -e "$timeout_file" ] \
      || { echo "this kernel has no hung-task detector (CONFIG_DETECT_HUNG_TASK)" >&2; exit 3; }
    ;;
  add)  # NAME SECONDS
    # hung_task_warnings counts down to 0, after which nothing more is reported: reset it.
    echo 10 >"$sysctl_dir/hung_task_warnings" && echo "$2" >"$timeout_file" || exit 1
    dmsetup create "$1" --table "0 8 zero" && dmsetup suspend "$1" || exit 1
    # The "zero" target takes the write (and discards it) once the device is resumed.
    setsid dd if=/dev/zero "of=/dev/mapper/$1" bs=4096 count=1 conv=fsync \
      </dev/null >/dev/null 2>&1 &
    ;;
  del)  # NAME SECONDS: the timeout to restore
    if dmsetup info "$1" >/dev/null 2>&1; then remove "$1" || exit 1; fi
    echo "$2" >"$timeout_file"
    ;;
  present)  # suspended, and held open by its writer (blocked in the device's queue)
    # The writer takes a moment to open the device (2 s under TCG): poll, up to 30 s.
    deadline=$(( $(date +%s) + 30 ))
    while state=$(dmsetup info -c --noheadings -o attr,open "$1") || exit 1; do
      case $state in
        *s*:[1-9]*) echo "/dev/mapper/$1 suspended, open by its writer ($state)"; exit 0 ;;
      esac
      [ "$(date +%s)" -lt "$deadline" ] || break
      sleep 0.2
    done
    echo "/dev/mapper/$1 is not suspended with a writer after 30 s: attr:open $state" >&2
    exit 1
    ;;
  gone) ! dmsetup info "$1" >/dev/null 2>&1 || { echo "/dev/mapper/$1 still exists" >&2; exit 1; } ;;
  scan)
    dmsetup ls 2>/dev/null | awk -v p="$prefix" 'index($1, p) == 1 { print "/dev/mapper/" $1 }'
    t=$(cat "$timeout_file" 2>/dev/null || echo "$default_timeout")
    [ "$t" -ge "$default_timeout" ] || echo "kernel.hung_task_timeout_secs=$t"
    true ;;
  sweep)
    dmsetup ls 2>/dev/null | awk -v p="$prefix" 'index($1, p) == 1 { print $1 }' |
      while read -r name; do
        if remove "$name"; then echo "healed: removed device-mapper device $name"
        else echo "FAILED: could not remove device-mapper device $name" >&2; fi
      done
    t=$(cat "$timeout_file" 2>/dev/null || echo "$default_timeout")
    if [ "$t" -lt "$default_timeout" ]; then
      echo "$default_timeout" >"$timeout_file" \
        && echo "healed: kernel.hung_task_timeout_secs $t -> $default_timeout"
    fi
    true ;;
  *) echo "usage: ${0##*/} timeout|fit|add|del|present|gone|scan|sweep ..." >&2; exit 2 ;;
esac
