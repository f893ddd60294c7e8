# Runs `MPIEXEC -np 3 PROGRAM` with BNORM_TEST_FAULT=FAULT (rank 1 dies or stalls at step 5
# of a data-parallel fit, tests/mpi/data_parallel_mpi_test.cpp) and checks that the job
# ends within LIMIT seconds, with a failing exit status and a message that says why:
#   stall: the others' CommunicationError ("stalled or died", after their 3 s timeout)
#   die:   mpiexec reports the dead rank and ends the job (or the timeout error)
# Called as cmake -DMPIEXEC=... -DPROGRAM=... -DFAULT=die|stall -DLIMIT=s -P fault_test.cmake
set(mpiexec_args ${MPIEXEC})  # a list: the launcher and its options
string(TIMESTAMP start "%s" UTC)
set(ENV{BNORM_TEST_FAULT} ${FAULT})
set(ENV{OMP_NUM_THREADS} 1)
execute_process(COMMAND ${mpiexec_args} -np 3 ${PROGRAM}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 120)
string(TIMESTAMP stop "%s" UTC)
math(EXPR seconds "${stop} - ${start}")
message(STATUS "fault '${FAULT}': exit status '${status}' after ${seconds} s\n${out}${err}")
if(status EQUAL 0)
  message(FATAL_ERROR "the job ended with status 0 after rank 1's fault '${FAULT}'")
endif()
if(NOT status MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the job did not end by itself: ${status}")
endif()
if(seconds GREATER ${LIMIT})
  message(FATAL_ERROR "the job took ${seconds} s to end, more than ${LIMIT} s")
endif()
if(FAULT STREQUAL "stall")
  if(NOT err MATCHES "stalled or died")
    message(FATAL_ERROR "no CommunicationError in the output")
  endif()
elseif(NOT "${out}${err}" MATCHES "rank 1|exited on signal|non-zero status|stalled or died")
  message(FATAL_ERROR "no message about rank 1 in the output")
endif()
