# libFuzzer target for tokenizer.json loading and encode/decode (opt-in: -DLOOM_FUZZ=ON, clang).
# Included from tests/tokenizer/CMakeLists.txt. Run:
#   build/tests/tokenizer/tokenizer_fuzz -max_total_time=300 -max_len=4096 \
#       build/fuzz-corpus tests/tokenizer/data/*/tokenizer.json
add_executable(tokenizer_fuzz ${PROJECT_SOURCE_DIR}/tests/fuzz/tokenizer_fuzz.cpp)
target_link_libraries(tokenizer_fuzz PRIVATE loom_tokenizer)
target_compile_definitions(tokenizer_fuzz PRIVATE LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
target_compile_options(tokenizer_fuzz PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
target_link_options(tokenizer_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
