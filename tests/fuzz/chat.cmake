# libFuzzer target for the Jinja engine (included by tests/chat/CMakeLists.txt when LOOM_FUZZ is on).
# Needs clang: cmake -DLOOM_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang ...
add_executable(chat_fuzz ${CMAKE_CURRENT_LIST_DIR}/chat_fuzz.cpp)
target_link_libraries(chat_fuzz PRIVATE loom_chat)
target_compile_options(chat_fuzz PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -g)
target_link_options(chat_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
# The library itself must be instrumented too for coverage and ASan.
target_compile_options(loom_chat PRIVATE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g)
target_compile_options(loom_common PRIVATE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g)
# Whatever links the instrumented library (test_chat too) needs the sanitizer runtimes.
target_link_options(loom_chat INTERFACE -fsanitize=address,undefined)
