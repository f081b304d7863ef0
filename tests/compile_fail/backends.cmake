# Compile-fail tests for the Eigen and xtensor backends, included from
# tests/compile_fail/CMakeLists.txt. Each source must NOT compile, and the compiler's output must
# carry the backend's static_assert message; the same source built with -DSTEADYLOSS_CONTROL must
# compile, so a failure for any other reason (a missing header, a typo) cannot pass as a proof.

# steadyloss_backend_compile_fail(<name> <source> <regex> <include target>... [DEFINE <macro>])
function(steadyloss_backend_compile_fail name source regex)
  cmake_parse_arguments(arg "" "DEFINE" "TARGETS" ${ARGN})
  set(include_flags -I${PROJECT_SOURCE_DIR}/include)
  foreach(target IN LISTS arg_TARGETS)
    if(TARGET ${target})
      get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
      if(dirs)
        foreach(dir IN LISTS dirs)
          # -isystem /usr/include would break the standard library's #include_next
          if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
            list(APPEND include_flags -isystem ${dir})
          endif()
        endforeach()
      endif()
    endif()
  endforeach()
  set(define_flags)
  if(arg_DEFINE)
    set(define_flags -D${arg_DEFINE})
  endif()
  set(compile ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only ${include_flags})
  add_test(NAME compile_fail:${name}
           COMMAND ${compile} ${define_flags} ${CMAKE_CURRENT_LIST_DIR}/${source})
  set_tests_properties(compile_fail:${name} PROPERTIES PASS_REGULAR_EXPRESSION "${regex}"
                       LABELS compile_fail)
  get_filename_component(stem ${source} NAME_WE)
  if(NOT TEST compile_fail:${stem}:control)
    add_test(NAME compile_fail:${stem}:control
             COMMAND ${compile} -DSTEADYLOSS_CONTROL ${CMAKE_CURRENT_LIST_DIR}/${source})
    set_tests_properties(compile_fail:${stem}:control PROPERTIES LABELS compile_fail)
  endif()
endfunction()

if(TARGET steadyloss::eigen)
  set(eigen_message "an Eigen expression or non-contiguous block is not a Tensor: evaluate it first")
  steadyloss_backend_compile_fail(eigen_expression eigen_expression.cpp "${eigen_message}"
                                  TARGETS Eigen3::Eigen)
  steadyloss_backend_compile_fail(eigen_array_expression eigen_expression.cpp "${eigen_message}"
                                  TARGETS Eigen3::Eigen DEFINE STEADYLOSS_ARRAY_EXPRESSION)
  steadyloss_backend_compile_fail(eigen_block eigen_block.cpp "${eigen_message}"
                                  TARGETS Eigen3::Eigen)
  steadyloss_backend_compile_fail(eigen_row_of_column_major eigen_block.cpp "${eigen_message}"
                                  TARGETS Eigen3::Eigen DEFINE STEADYLOSS_ROW_OF_COLUMN_MAJOR)
endif()

if(TARGET steadyloss::xtensor)
  set(xtensor_message "an xtensor expression or view .* is not a Tensor: evaluate it first with xt::eval")
  steadyloss_backend_compile_fail(xtensor_expression xtensor_expression.cpp "${xtensor_message}"
                                  TARGETS xtensor xtl)
  steadyloss_backend_compile_fail(xtensor_view xtensor_expression.cpp "${xtensor_message}"
                                  TARGETS xtensor xtl DEFINE STEADYLOSS_VIEW)
endif()
