# Sourced by make-bundle.sh and check-libraries.sh: which libraries count as base system.
# base-libraries.txt names them; what they load themselves (libfreetype's libpng, libXdmcp's
# libbsd, ...) comes installed with them on any machine that has them, so it counts too. That
# closure is read from this machine's copies with ldd.
base_patterns=()
base_names=()

load_base() {
  local list=$1 path dep
  mapfile -t base_patterns < <(grep -v '^[[:space:]]*\(#\|$\)' "$list")
  declare -gA base_closure=()
  for path in $(base_paths); do
    for dep in $(env -u LD_LIBRARY_PATH ldd "$path" 2>/dev/null | awk '$2 == "=>" {print $1}'); do
      base_closure[$dep]=1
    done
  done
}

# This machine's copies of the listed base libraries (64-bit ones, as the loader's cache names them).
base_paths() {
  local name rest path p
  ldconfig -p | while read -r name rest; do
    [[ $rest == *x86-64* ]] || continue
    path=${rest##*=> }
    for p in "${base_patterns[@]}"; do
      # shellcheck disable=SC2053  # the list holds patterns
      if [[ $name == $p ]]; then
        echo "$path"
        break
      fi
    done
  done | sort -u
}

is_base() {
  local name=$1 p
  [ -n "${base_closure[$name]:-}" ] && return 0
  for p in "${base_patterns[@]}"; do
    # shellcheck disable=SC2053  # the list holds patterns
    [[ $name == $p ]] && return 0
  done
  return 1
}
