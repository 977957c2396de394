# tests/test_costs.cmake: read by ctest after the tests gtest_discover_tests found (the directory's
# TEST_INCLUDE_FILES; trellis_tests_TESTS lists their names). A fresh build directory has no
# timing history (Testing/Temporary/CTestCostData.txt), so ctest would start tests in the order
# they were declared, and the few long ones could start last and run on their own at the end of
# `ctest -j N`. A COST starts them first, longest first. Values: seconds in a `scripts/test.sh` run
# on a 2-core machine; only their order matters, and once a build directory has a history ctest
# uses that instead. A name that matches no test is ignored: rename here too.
# (GpuAcceptance.QuickRunOfTheScript, an add_test of tests/CMakeLists.txt, has its COST there.)
set(trellis_long_tests
  Quantize.KilledResumedLoadsAndMatchesExllamaQuality=370
  KvHeads/QuantizeOddDims.PadsAndMatchesFp16Logits/kv1=190
  QuantizeDiskFull.FailsCleanlyAndResumes=90
  Exl3Vectors.Viterbi=32
  Exl3Vectors.ViterbiTile0=30
  VulkanAttentionCoop.EmulatedMatchesCpu=27
  QuantLinear.ReconstructsThroughTheReferenceDecoder=21
  CpuTileEncoder.EveryTargetMatchesScalarOracleOnRandomTiles=16)
foreach(test IN LISTS trellis_tests_TESTS)
  # Value-parameterized tests are named "Suite/Test.Name/param  # GetParam() = value".
  string(REGEX REPLACE "  # .*" "" gtest_name "${test}")
  foreach(entry IN LISTS trellis_long_tests)
    if(entry MATCHES "^(.*)=([0-9]+)$" AND CMAKE_MATCH_1 STREQUAL gtest_name)
      set_tests_properties("${test}" PROPERTIES COST ${CMAKE_MATCH_2})
    endif()
  endforeach()
endforeach()
