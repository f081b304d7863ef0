#!/usr/bin/env bash
# Builds and runs the tiny consumer program against steadyloss the way a downstream project would.
# usage: run.sh MODE SOURCE_DIR WORK_DIR [INSTALL_PREFIX]
#   install      cmake --install the build tree at WORK_DIR/../.. into INSTALL_PREFIX
#   cmake        find_package(steadyloss CONFIG) against INSTALL_PREFIX
#   pkgconfig    pkg-config --cflags steadyloss against INSTALL_PREFIX
#   fetchcontent FetchContent / add_subdirectory of SOURCE_DIR
#   meson        a meson project with SOURCE_DIR as its subproject
set -euo pipefail
mode=$1 source=$2 work=$3 prefix=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
cxx=${CXX:-c++}
rm -rf "$work/$mode" && mkdir -p "$work/$mode"
case $mode in
  install)
    rm -rf "$prefix"
    cmake --install "$BUILD_TREE" --prefix "$prefix" >/dev/null
    test -f "$prefix/share/cmake/steadyloss/steadylossConfig.cmake"
    test -f "$prefix/share/pkgconfig/steadyloss.pc"
    test -f "$prefix/include/steadyloss/steadyloss.hpp"
    echo "installed to $prefix";;
  cmake)
    cmake -S "$here/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
    cmake --build "$work/cmake" >/dev/null
    "$work/cmake/consumer";;
  pkgconfig)
    flags=$(PKG_CONFIG_PATH="$prefix/share/pkgconfig" pkg-config --cflags steadyloss)
    "$cxx" -std=c++20 $flags "$here/main.cpp" -o "$work/pkgconfig/consumer"
    "$work/pkgconfig/consumer";;
  fetchcontent)
    cmake -S "$here/fetchcontent" -B "$work/fetchcontent" -DSTEADYLOSS_SOURCE="$source" \
          -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
    cmake --build "$work/fetchcontent" --target consumer >/dev/null
    "$work/fetchcontent/consumer";;
  meson)
    cp -r "$here/meson" "$work/meson/project"
    cp "$here/main.cpp" "$work/meson/"
    mkdir -p "$work/meson/project/subprojects"
    ln -s "$source" "$work/meson/project/subprojects/steadyloss"
    CXX="$cxx" meson setup "$work/meson/build" "$work/meson/project" >/dev/null
    meson compile -C "$work/meson/build" >/dev/null
    "$work/meson/build/consumer";;
  *) echo "unknown mode $mode" >&2; exit 2;;
esac
