#!/bin/sh
# Layer check: no header under include/steadyloss/stability/ may include, even indirectly, a
# header of the loss layer (loss/) or the CPU pass (detail/cpu_pass.hpp). The step policies know
# the core only; a policy header that pulled in the loss layer would bring the fused kernels and
# the ISA dispatch into every file that only wants an EmaSmoother.
# Usage: check_layers.sh INCLUDE_DIR COMPILER [COMPILER ARGS...]   (a compiler that takes -H)
include_dir="$1"
shift
status=0
count=0
for header in "$include_dir"/steadyloss/stability/*.hpp; do
  name="steadyloss/stability/${header##*/}"
  count=$((count + 1))
  # -H lists every header opened, one per line, indented with dots by depth.
  if ! listing=$(printf '#include <%s>\n' "$name" | "$@" -std=c++20 -I"$include_dir" -H -fsyntax-only -x c++ - 2>&1); then
    printf '%s\n' "$listing"
    echo "FAIL: $name does not compile on its own"
    status=1
    continue
  fi
  bad=$(printf '%s\n' "$listing" | grep -E '^\.+ .*(/loss/|/detail/cpu_pass\.hpp)')
  if [ -n "$bad" ]; then
    echo "FAIL: $name includes the loss layer or the CPU pass:"
    printf '%s\n' "$bad"
    status=1
  fi
done
if [ "$count" -eq 0 ]; then
  echo "FAIL: no header found under $include_dir/steadyloss/stability"
  exit 1
fi
[ "$status" -eq 0 ] && echo "PASS: $count stability headers include neither loss/ nor detail/cpu_pass.hpp"
exit $status
