# Creates steadyloss::eigen and steadyloss::xtensor for the backend libraries that are found.
# Used by the build tree and, installed beside the config file, by find_package(steadyloss).
include(CMakeFindDependencyMacro)

if(NOT TARGET steadyloss::eigen)
  find_package(Eigen3 3.4 QUIET NO_MODULE)
  if(TARGET Eigen3::Eigen)
    add_library(steadyloss::eigen INTERFACE IMPORTED)
    target_link_libraries(steadyloss::eigen INTERFACE steadyloss::steadyloss Eigen3::Eigen)
  endif()
endif()

if(NOT TARGET steadyloss::xtensor)
  find_package(xtensor QUIET)
  if(TARGET xtensor)
    add_library(steadyloss::xtensor INTERFACE IMPORTED)
    target_link_libraries(steadyloss::xtensor INTERFACE steadyloss::steadyloss xtensor)
  endif()
endif()
