# Installation and package files: headers, libdeltacome.so (SONAME by major) and libdeltacome.a,
# GPU backend modules when built, the CLI, deltacomeConfig.cmake (+ Version, exported targets
# deltacome::deltacome and deltacome::deltacome_static) and deltacome.pc.
#
# Included at the end of the top-level CMakeLists.txt, after every target exists.
#
# Why the static target's link interface is rewritten: in the build tree deltacome_static links
# PUBLIC to absolute paths (/usr/lib/.../liblapacke.so) and to the imported targets PkgConfig::ZSTD,
# PkgConfig::XXHASH and Threads::Threads. Exported as is, the installed package would need the
# consumer to recreate those imported targets (find_dependency on pkg-config modules) and would pin
# the build machine's paths. Installed consumers instead get plain library names (-lzstd, -llapacke,
# ...), the same list that deltacome.pc gives as Libs.private. The build tree is unchanged
# ($<BUILD_INTERFACE:...> keeps the original items for the CLI, tests and benchmarks).
include(CMakePackageConfigHelpers)

set(DC_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/deltacome CACHE STRING
  "Where deltacomeConfig.cmake is installed (relative to the prefix)")
set(DC_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig CACHE STRING
  "Where deltacome.pc is installed (relative to the prefix)")

# ---- plain link names for the static library's dependencies -------------------------------------
# Turns one link item into what an installed consumer can use: a library file in a directory the
# linker searches anyway becomes its bare name (/usr/lib/x86_64-linux-gnu/liblapacke.so -> lapacke),
# -lfoo becomes foo, a file elsewhere stays an absolute path (still correct on this machine).
set(_dc_implicit_dirs ${CMAKE_C_IMPLICIT_LINK_DIRECTORIES} ${CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES}
  /lib /usr/lib /usr/lib64 /usr/local/lib)
function(_dc_plain_link_item item out_var)
  set(result "")
  if(item MATCHES "^-l(.+)$")
    set(result "${CMAKE_MATCH_1}")
  elseif(item MATCHES "^-")
    set(result "${item}")  # another linker flag (-pthread): keep it
  elseif(IS_ABSOLUTE "${item}")
    get_filename_component(dir "${item}" DIRECTORY)
    get_filename_component(file "${item}" NAME)
    if(dir IN_LIST _dc_implicit_dirs AND file MATCHES "^lib(.+)\\.(so|a)(\\..*)?$")
      set(result "${CMAKE_MATCH_1}")
    else()
      set(result "${item}")
    endif()
  elseif(NOT item MATCHES "::")
    set(result "${item}")
  endif()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

set(_dc_static_deps "")
foreach(item ${LAPACKE_LIB} ${LAPACK_LIBRARIES} ${ZSTD_LIBRARIES} ${XXHASH_LIBRARIES} pthread
    ${CMAKE_DL_LIBS})
  _dc_plain_link_item("${item}" plain)
  if(plain)
    list(APPEND _dc_static_deps "${plain}")
  endif()
endforeach()
# lapack and blas by name too: liblapacke.so needs them, and static consumers link with the
# linker's --as-needed, so naming them is harmless when openblas already provides both.
foreach(name lapack blas)
  find_library(_dc_${name}_lib ${name})
  if(_dc_${name}_lib)
    list(APPEND _dc_static_deps ${name})
  endif()
endforeach()
# The archive holds C++ objects: a C program linking it needs the C++ runtime (libstdc++, libm),
# i.e. what the C++ driver links beyond what the C driver links.
foreach(lib ${CMAKE_CXX_IMPLICIT_LINK_LIBRARIES})
  if(NOT lib IN_LIST CMAKE_C_IMPLICIT_LINK_LIBRARIES)
    _dc_plain_link_item("${lib}" plain)
    if(plain)
      list(APPEND _dc_static_deps "${plain}")
    endif()
  endif()
endforeach()
list(REMOVE_DUPLICATES _dc_static_deps)

get_target_property(_dc_static_iface deltacome_static INTERFACE_LINK_LIBRARIES)
if(NOT _dc_static_iface)
  set(_dc_static_iface "")
endif()
set_property(TARGET deltacome_static PROPERTY INTERFACE_LINK_LIBRARIES "")
foreach(item ${_dc_static_iface})  # one generator expression per item: a list would split it
  set_property(TARGET deltacome_static APPEND PROPERTY INTERFACE_LINK_LIBRARIES
    "$<BUILD_INTERFACE:${item}>")
endforeach()
foreach(dep ${_dc_static_deps})
  set_property(TARGET deltacome_static APPEND PROPERTY INTERFACE_LINK_LIBRARIES
    "$<INSTALL_INTERFACE:${dep}>")
endforeach()

# Libs.private for deltacome.pc: the same list as -l flags.
set(DC_PC_LIBS_PRIVATE "")
foreach(dep ${_dc_static_deps})
  if(dep MATCHES "^-" OR IS_ABSOLUTE "${dep}")
    string(APPEND DC_PC_LIBS_PRIVATE " ${dep}")
  else()
    string(APPEND DC_PC_LIBS_PRIVATE " -l${dep}")
  endif()
endforeach()
string(STRIP "${DC_PC_LIBS_PRIVATE}" DC_PC_LIBS_PRIVATE)

# ---- files ------------------------------------------------------------------------------------------
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/deltacome
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.h")

install(TARGETS deltacome EXPORT deltacomeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(TARGETS deltacome_static EXPORT deltacomeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# GPU backends are modules the core loads at run time from its own directory.
if(TARGET deltacome-cuda)
  install(TARGETS deltacome-cuda
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
    RUNTIME DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
endif()
# The HIP module (built by hipcc through a custom command) is installed by hip/CMakeLists.txt.

if(TARGET deltacome_cli)
  install(TARGETS deltacome_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
endif()

install(EXPORT deltacomeTargets NAMESPACE deltacome:: FILE deltacomeTargets.cmake
  DESTINATION ${DC_INSTALL_CMAKEDIR} COMPONENT dev)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/deltacomeConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake-package/deltacomeConfig.cmake
  INSTALL_DESTINATION ${DC_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake-package/deltacomeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake-package/deltacomeConfig.cmake
  ${CMAKE_BINARY_DIR}/cmake-package/deltacomeConfigVersion.cmake
  DESTINATION ${DC_INSTALL_CMAKEDIR} COMPONENT dev)

# deltacome.pc is relocatable: prefix is computed from the .pc file's own location (${pcfiledir}),
# so `cmake --install build --prefix /elsewhere` and DESTDIR staging give a working file.
file(RELATIVE_PATH DC_PC_PREFIX_FROM_PCDIR "/dc-prefix/${DC_INSTALL_PKGCONFIGDIR}" "/dc-prefix")
string(REGEX REPLACE "/$" "" DC_PC_PREFIX_FROM_PCDIR "${DC_PC_PREFIX_FROM_PCDIR}")
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(DC_PC_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    set(DC_PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
configure_file(${CMAKE_CURRENT_LIST_DIR}/deltacome.pc.in ${CMAKE_BINARY_DIR}/cmake-package/deltacome.pc
  @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cmake-package/deltacome.pc
  DESTINATION ${DC_INSTALL_PKGCONFIGDIR} COMPONENT dev)
