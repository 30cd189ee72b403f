#!/bin/bash
# The JRE as the driver finds it, and the Java faults' probes and checks (lab/faults/java.py).
#   java.sh locate JAVA            the real binary behind JAVA on PATH (.../bin/java)
#   java.sh libs HOME LIB          every LIB under HOME
#   java.sh present BIN            exit 3 unless BIN exists
#   java.sh fails BIN              exit 0 iff `BIN -version` fails; prints its complaint
#   java.sh gone BIN JAVA          exit 0 iff BIN is gone and JAVA no longer resolves on PATH
#   java.sh mode BIN               BIN's mode (octal)
#   java.sh noexec BIN             chmod a-x BIN
#   java.sh setmode MODE BIN       chmod MODE BIN if BIN exists
#   java.sh hasmode MODE BIN       exit 0 iff BIN has MODE
#   java.sh scan | sweep ROOT...   a .../bin/java under the roots with no execute bit; sweep
#                                  sets 0755. (Not `command -v java`: it skips such a file.)
# Exit 3 means a precondition failed and nothing was changed; stderr says which.
set -u

non_executable_java() {
  find "$@" -xdev -path '*/bin/java' -type f ! -perm /111 2>/dev/null
}

sub=${1:-}
shift
case $sub in
  locate)
    java=$1
    j=$(command -v "$java") || { echo "no $java on PATH: install a JRE in the lab host" \
      "(openjdk-17-jre-headless) or pass java_home=" >&2; exit 3; }
    real=$(readlink -f "$j")
    case $real in
      */bin/java) echo "$real" ;;
      *) echo "$j resolves to $real, not .../bin/java: pass java_home=" >&2; exit 3 ;;
    esac
    ;;
  libs)
    home=$1 lib=$2
    [ -d "$home" ] || { echo "java home $home does not exist" >&2; exit 3; }
    found=$(find "$home" -name "$lib" \( -type f -o -type l \))
    [ -n "$found" ] || { echo "no $lib under $home: name a library the JRE has, e.g." \
      "libjli.so or libjvm.so" >&2; exit 3; }
    echo "$found"
    ;;
  present)
    [ -e "$1" ] || { echo "$1 does not exist" >&2; exit 3; }
    ;;
  fails)
    if out=$("$1" -version 2>&1); then
      echo "java still runs: $(echo "$out" | head -1)" >&2
      exit 1
    fi
    echo "$out" | head -1
    ;;
  gone)
    bin=$1 java=$2
    [ ! -e "$bin" ] || { echo "$bin still exists" >&2; exit 1; }
    case $java in
      */*) ;;
      *) if other=$(command -v "$java"); then echo "$java still resolves: $other" >&2; exit 1; fi ;;
    esac
    ;;
  mode)
    [ -f "$1" ] || { echo "$1 is not a file" >&2; exit 3; }
    stat -c %a "$1"
    ;;
  noexec)
    chmod a-x "$1"
    ;;
  setmode)
    if [ -e "$2" ]; then chmod "$1" "$2"; fi
    ;;
  hasmode)
    mode=$(stat -c %a "$2") || exit
    [ "$mode" = "$1" ] || { echo "$2 has mode $mode, expected $1" >&2; exit 1; }
    ;;
  scan)
    non_executable_java "$@"
    true
    ;;
  sweep)
    non_executable_java "$@" | while read -r java; do
      chmod 0755 "$java" && echo "healed: chmod 0755 $java"
    done
    true
    ;;
  *)
    echo "usage: ${0##*/} locate|libs|present|fails|gone|mode|noexec|setmode|hasmode|scan|sweep" >&2
    exit 2
    ;;
esac
