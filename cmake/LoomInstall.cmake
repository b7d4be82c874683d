# cmake --install: headers (kept at their repo paths), libraries, loomConfig.cmake and loom.pc.
include(CMakePackageConfigHelpers)
get_property(_loom_libs GLOBAL PROPERTY LOOM_LIBRARIES)
install(TARGETS ${_loom_libs} EXPORT loomTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/loom DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/generated/loom/common/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loom/common)
install(EXPORT loomTargets NAMESPACE loom:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loom)
file(WRITE ${PROJECT_BINARY_DIR}/loomConfig.cmake.in [=[
@PACKAGE_INIT@
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(nlohmann_json)
find_dependency(PkgConfig)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
include("${CMAKE_CURRENT_LIST_DIR}/loomTargets.cmake")
]=])
configure_package_config_file(${PROJECT_BINARY_DIR}/loomConfig.cmake.in ${PROJECT_BINARY_DIR}/loomConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loom)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/loomConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/loomConfig.cmake ${PROJECT_BINARY_DIR}/loomConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loom)
set(_loom_pc_order ${_loom_libs})
list(REVERSE _loom_pc_order)  # static linking: dependents before their dependencies
string(REPLACE ";" " -l" _loom_pc_libs "-l${_loom_pc_order}")
file(WRITE ${PROJECT_BINARY_DIR}/loom.pc "prefix=${CMAKE_INSTALL_PREFIX}
libdir=\${prefix}/${CMAKE_INSTALL_LIBDIR}
includedir=\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}

Name: loom
Description: mlx-lm model architectures in C++ on CPU and NVIDIA GPUs
Version: ${PROJECT_VERSION}
Requires.private: openblas libpcre2-8 libutf8proc sentencepiece libcurl
Libs: -L\${libdir} ${_loom_pc_libs}
Cflags: -I\${includedir}
")
install(FILES ${PROJECT_BINARY_DIR}/loom.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
