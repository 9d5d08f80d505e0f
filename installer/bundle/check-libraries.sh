#!/usr/bin/env bash
# Checks that every ELF file in an unpacked offline bundle finds each library it loads either
# inside the bundle or among the base-system libraries (base-libraries.txt beside this script),
# with the caller's LD_LIBRARY_PATH out of the way. Prints each fault; exits 1 on any.
# Usage: check-libraries.sh BUNDLE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(readlink -f "${1:?usage: check-libraries.sh BUNDLE_DIR}")
# shellcheck source=base.sh
. "$here/base.sh"
load_base "$here/base-libraries.txt"


is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' \n')" = '177ELF' ]; }

faults=0 checked=0 elves=()
while IFS= read -r -d '' f; do
  is_elf "$f" || continue
  checked=$((checked + 1))
  elves+=("$f")
  rel=${f#"$root"/}
  # A search path outside the bundle would find the machine's libraries first.
  runpath=$(readelf -d "$f" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
  IFS=: read -ra dirs <<<"$runpath"
  for d in "${dirs[@]}"; do
    case "$d" in
      '$ORIGIN'*) ;;
      *) echo "FAIL $rel: search path outside the bundle: $d"; faults=$((faults + 1)) ;;
    esac
  done
  out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD ldd "$f" 2>&1) || {
    echo "FAIL $rel: ldd: $out"
    faults=$((faults + 1))
    continue
  }
  while read -r name arrow path _; do
    [ -n "$name" ] || continue
    [[ $name == statically ]] && continue
    if [[ $name == /* ]]; then name=${name##*/}; path=; fi
    is_base "$name" && continue
    if [ "$arrow" != "=>" ] || [ -z "$path" ]; then
      echo "FAIL $rel: $name: not a bundle or base-system library"
      faults=$((faults + 1))
    elif [ "$path" = not ]; then
      echo "FAIL $rel: $name not found"
      faults=$((faults + 1))
    else
      resolved=$(readlink -f "$path")
      if [[ $resolved != "$root"/* ]]; then
        echo "FAIL $rel: $name resolves outside the bundle: $resolved"
        faults=$((faults + 1))
      fi
    fi
  done <<<"$out"
done < <(find "$root" -type f -print0)

# The oldest systems the bundle is meant for: Ubuntu 22.04 (glibc 2.35, GCC 12's libstdc++) and
# Debian 12. A library needing newer symbol versions from the base system would not load there.
max_glibc=2.35 max_glibcxx=3.4.30
need=$(printf '%s\0' "${elves[@]}" | xargs -0 objdump -T 2>/dev/null |
  grep -o '(GLIBC_[0-9.]*)\|(GLIBCXX_[0-9.]*)' | tr -d '()' | sort -u || true)
newest() { echo "$need" | sed -n "s/^$1_//p" | sort -V | tail -1; }
for pair in "GLIBC $max_glibc" "GLIBCXX $max_glibcxx"; do
  set -- $pair
  have=$(newest "$1")
  if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$have" "$2" | sort -V | tail -1)" != "$2" ]; then
    echo "FAIL the bundle needs $1_$have, newer than $1_$2"
    faults=$((faults + 1))
  fi
  echo "check-libraries: needs $1_${have:-none} (at most $1_$2)"
done

if [ "$checked" -eq 0 ]; then
  echo "FAIL no ELF files under $root"
  exit 1
fi
echo "check-libraries: $checked ELF files, $faults faults"
[ "$faults" -eq 0 ]
