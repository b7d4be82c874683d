// Stop strings: a partial stop string is held back, never emitted, also across tokens and inside
// multi-byte UTF-8 characters.
#include <gtest/gtest.h>

#include "loom/generate/stopping.h"

using loom::generate::StopStringFilter;

TEST(StopStrings, HoldsBackAPartialStopAcrossTokens) {
  StopStringFilter f({"</s>"});
  EXPECT_EQ(f.push("Hello <"), "Hello ");  // "<" might start "</s>"
  EXPECT_EQ(f.push("/s"), "");             // "</s" still might
  EXPECT_EQ(f.push("> more"), "");         // "</s>" completes: stop, nothing after it
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.matched(), "</s>");
  EXPECT_EQ(f.push("x"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopStrings, ReleasesAHeldTailThatDidNotMatch) {
  StopStringFilter f({"</s>"});
  EXPECT_EQ(f.push("a </"), "a ");
  EXPECT_EQ(f.push("b"), "</b");
  EXPECT_EQ(f.push("<"), "");
  EXPECT_EQ(f.flush(), "<");
  EXPECT_FALSE(f.stopped());
}

TEST(StopStrings, MultiByteCharacters) {
  // "é" is C3 A9; the stop is "é!". "café" must hold "é" back until the next piece decides.
  StopStringFilter f({"\xC3\xA9!"});
  EXPECT_EQ(f.push("caf\xC3\xA9"), "caf");
  EXPECT_EQ(f.push("?"), "\xC3\xA9?");
  EXPECT_EQ(f.push("\xC3\xA9"), "");
  EXPECT_EQ(f.push("!"), "");
  EXPECT_TRUE(f.stopped());
  // A stop whose first byte is a continuation byte of the text never splits a character: stop "\xA9x"
  // (odd, but possible with byte-level text) holds the whole "é".
  StopStringFilter g({"\xA9x"});
  EXPECT_EQ(g.push("a\xC3\xA9"), "a");
  EXPECT_EQ(g.flush(), "\xC3\xA9");
}

TEST(StopStrings, EarliestOfSeveralStops) {
  StopStringFilter f({"world", "lo w"});
  EXPECT_EQ(f.push("hello world"), "hel");
  EXPECT_EQ(f.matched(), "lo w");
}
