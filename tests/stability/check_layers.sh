#!/bin/sh
# Layer check, with the compiler's own list of opened headers (-H), indirect includes counted:
#   stability/*.hpp  include nothing from loss/ nor the CPU pass (detail/cpu_pass.hpp): the step
#                    policies know the core only; a policy header that pulled in the loss layer
#                    would bring the fused kernels and the ISA dispatch into every file that only
#                    wants an EmaSmoother;
#   core/*.hpp       include nothing from loss/, stability/ or backend/: the layers above build on
#                    the core, never the reverse.
# Usage: check_layers.sh INCLUDE_DIR COMPILER [COMPILER ARGS...]   (a compiler that takes -H)
include_dir="$1"
shift
status=0
count=0
for layer in stability core; do
  case "$layer" in
    stability) forbidden='/loss/|/detail/cpu_pass\.hpp'; what='the loss layer or the CPU pass' ;;
    core) forbidden='/loss/|/stability/|/backend/'; what='a layer above the core' ;;
  esac
  for header in "$include_dir"/steadyloss/"$layer"/*.hpp; do
    name="steadyloss/$layer/${header##*/}"
    count=$((count + 1))
    # -H lists every header opened, one per line, indented with dots by depth.
    if ! listing=$(printf '#include <%s>\n' "$name" | "$@" -std=c++20 -I"$include_dir" -H -fsyntax-only -x c++ - 2>&1); then
      printf '%s\n' "$listing"
      echo "FAIL: $name does not compile on its own"
      status=1
      continue
    fi
    bad=$(printf '%s\n' "$listing" | grep -E "^\.+ .*($forbidden)")
    if [ -n "$bad" ]; then
      echo "FAIL: $name includes $what:"
      printf '%s\n' "$bad"
      status=1
    fi
  done
done
if [ "$count" -eq 0 ]; then
  echo "FAIL: no header found under $include_dir/steadyloss/stability or core"
  exit 1
fi
[ "$status" -eq 0 ] && echo "PASS: $count headers: stability/ includes neither loss/ nor detail/cpu_pass.hpp, core/ nothing above it"
exit $status
