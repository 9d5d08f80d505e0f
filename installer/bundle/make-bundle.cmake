# CPack runs this after staging the install tree and before archiving it (CPACK_PRE_BUILD_SCRIPTS),
# for the bundle's generators only: make-bundle.sh turns the tree into the self-contained bundle.
file(GLOB_RECURSE launchers LIST_DIRECTORIES false "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*/bin/mlmamba-cli"
     "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/bin/mlmamba-cli")
list(LENGTH launchers n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "make-bundle: expected one staged bin/mlmamba-cli under "
                      "${CPACK_TEMPORARY_INSTALL_DIRECTORY}, found: ${launchers}")
endif()
get_filename_component(root "${launchers}" DIRECTORY)
get_filename_component(root "${root}" DIRECTORY)
message(STATUS "make-bundle: ${root}")
execute_process(
  COMMAND bash "${CPACK_MLMAMBA_BUNDLE_DIR}/make-bundle.sh" "${root}" "${CPACK_MLMAMBA_QT_PLUGINS}"
          "${CPACK_MLMAMBA_LIBDIR}"
  COMMAND_ERROR_IS_FATAL ANY)
