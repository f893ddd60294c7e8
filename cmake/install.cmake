# Install rules and packaging (included from the top CMakeLists.txt when BNORM_INSTALL is
# on: the default for the top-level project). What gets installed:
#   bin/bnorm                                 the command line tool (when built)
#   include/bnorm/...                         the public headers
#   lib/libbnorm_{core,kernels,nn,io}.so.*    the libraries (or .a when static)
#   lib/cmake/bnorm/                          find_package(bnorm): bnorm::core, bnorm::io,
#                                             bnorm::bnorm, and bnormConfigVersion.cmake
#   lib/pkgconfig/bnorm-core.pc, bnorm.pc     the same two sets for pkg-config
# and `make package` (cpack -G DEB) turns that into a Debian package.
include(CMakePackageConfigHelpers)

# Exported names: bnorm::core is the three libraries without file formats (its parts are
# bnorm::core_tensor, bnorm::core_kernels, bnorm::core_nn), bnorm::io the file formats.
set_target_properties(bnorm_core PROPERTIES EXPORT_NAME core_tensor)
set_target_properties(bnorm_kernels PROPERTIES EXPORT_NAME core_kernels)
set_target_properties(bnorm_nn PROPERTIES EXPORT_NAME core_nn)
set_target_properties(bnorm_core_all PROPERTIES EXPORT_NAME core)
set_target_properties(bnorm_io PROPERTIES EXPORT_NAME io)
set_target_properties(bnorm PROPERTIES EXPORT_NAME bnorm)

set(bnorm_libraries bnorm_core bnorm_kernels bnorm_nn bnorm_io)
# bnorm::mpi (the MPI Communicator) when MPI was found: exported as bnorm::mpi.
if(TARGET bnorm_mpi)
  set_target_properties(bnorm_mpi PROPERTIES EXPORT_NAME mpi)
  list(APPEND bnorm_libraries bnorm_mpi)
  set(BNORM_EXPORTS_MPI ON)
else()
  set(BNORM_EXPORTS_MPI OFF)
endif()
# Where the tool and the libraries find the libraries when installed outside the system's
# library directories (cmake --install BUILD --prefix DIR): relative to themselves, so the
# tree can be moved. Under /usr (the Debian package) no RPATH is written.
file(RELATIVE_PATH bnorm_bin_to_lib ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
list(FIND CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES ${CMAKE_INSTALL_FULL_LIBDIR} bnorm_libdir_is_system)
if(BUILD_SHARED_LIBS AND bnorm_libdir_is_system EQUAL -1)
  set_target_properties(${bnorm_libraries} PROPERTIES INSTALL_RPATH "$ORIGIN")
endif()

install(TARGETS ${bnorm_libraries} bnorm_core_all bnorm
        EXPORT bnormTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/bnorm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
if(TARGET bnorm_cli)
  if(BUILD_SHARED_LIBS AND bnorm_libdir_is_system EQUAL -1)
    set_target_properties(bnorm_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${bnorm_bin_to_lib}")
  endif()
  install(TARGETS bnorm_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/CHANGELOG.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# find_package(bnorm CONFIG): the targets, the config (which finds what static libraries
# still need at link time) and the version file. Compatibility follows the SONAME: while
# bnorm is 0.x a minor version may break the API (semantic versioning), so a program
# asking for 0.1 accepts 0.1.x only (SameMinorVersion; AnyNewerVersion or
# SameMajorVersion would claim that 0.2 works for it); from 1.0 on, SameMajorVersion.
set(bnorm_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/bnorm)
install(EXPORT bnormTargets NAMESPACE bnorm:: DESTINATION ${bnorm_cmake_dir})
if(BUILD_SHARED_LIBS)
  set(BNORM_STATIC_LIBS OFF)
else()
  set(BNORM_STATIC_LIBS ON)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/bnormConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/bnormConfig.cmake
                              INSTALL_DESTINATION ${bnorm_cmake_dir})
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(bnorm_compatibility SameMinorVersion)
else()
  set(bnorm_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bnormConfigVersion.cmake
                                 COMPATIBILITY ${bnorm_compatibility})
install(FILES ${PROJECT_BINARY_DIR}/bnormConfig.cmake ${PROJECT_BINARY_DIR}/bnormConfigVersion.cmake
        DESTINATION ${bnorm_cmake_dir})

# pkg-config: bnorm-core.pc (bnorm::core) and bnorm.pc (all of bnorm). The prefix is found
# from the .pc file's own place, so the installed tree can be moved. What static libraries
# need besides goes to the private fields (pkg-config --static).
set(bnorm_pkgconfig_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH bnorm_pc_to_prefix ${CMAKE_INSTALL_PREFIX}/${bnorm_pkgconfig_dir} ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" bnorm_pc_to_prefix "${bnorm_pc_to_prefix}")
if(BNORM_STATIC_LIBS)
  set(BNORM_PC_CORE_REQUIRES_PRIVATE "Requires.private: openblas")
  set(BNORM_PC_CORE_LIBS_PRIVATE "Libs.private: -ldnnl ${OpenMP_CXX_FLAGS}")
  set(BNORM_PC_IO_REQUIRES_PRIVATE "Requires.private: hdf5 libzip zlib libpng libjpeg")
else()
  set(BNORM_PC_CORE_REQUIRES_PRIVATE "")
  set(BNORM_PC_CORE_LIBS_PRIVATE "")
  set(BNORM_PC_IO_REQUIRES_PRIVATE "")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/bnorm-core.pc.in ${PROJECT_BINARY_DIR}/bnorm-core.pc @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/cmake/bnorm.pc.in ${PROJECT_BINARY_DIR}/bnorm.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/bnorm-core.pc ${PROJECT_BINARY_DIR}/bnorm.pc
        DESTINATION ${bnorm_pkgconfig_dir})

# The Debian package (make package, which configures with CMAKE_INSTALL_PREFIX=/usr):
# one package `bnorm` with the tool, the shared libraries and what a program needs to
# build against them. Dependencies on shared libraries come from dpkg-shlibdeps (package
# dpkg-dev); the headers include only the C++ standard library, so a program built
# against the shared libraries needs no other -dev package.
if(PROJECT_IS_TOP_LEVEL)
  set(CPACK_GENERATOR DEB)
  set(CPACK_PACKAGE_NAME bnorm)
  set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
  set(CPACK_PACKAGE_CONTACT "bnorm maintainers <maintainers@users.noreply.h-seed-772f9d77.example>")
  set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
      "batch normalization exactly as Keras and PyTorch define it (C++20 library and tool)")
  # Lines after the summary (CPack puts the summary first).
  set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "The bnorm command line tool (train, inspect, evaluate and predict with
Keras models, the batch-normalization experiment), the shared libraries, the
C++ headers, and the CMake (find_package(bnorm)) and pkg-config files to
build programs against them.")
  set(CPACK_DEBIAN_PACKAGE_SECTION science)
  set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
  # `bnorm experiment`: its default dataset and the figures.
  set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "dataset-fashion-mnist, gnuplot-nox")
  set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
  include(CPack)
endif()
