// Malformed safetensors files: each must give a trellis::Error naming the file (and the tensor
// where there is one), never a crash or an out-of-bounds read (run under ASan to be sure).
#include <gtest/gtest.h>

#include "format/safetensors.h"
#include "format_test_helpers.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::Bytes;
using test::expect_error;
using test::filled;
using test::make_image;

constexpr const char* kName = "bad.safetensors";

void expect_bad(const Bytes& img, std::initializer_list<std::string> parts) {
  std::vector<std::string> all{kName};
  all.insert(all.end(), parts.begin(), parts.end());
  try {
    SafetensorsFile::parse(img, kName);
    ADD_FAILURE() << "parsed without error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    for (const auto& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << p << " not in: " << e.what();
  }
}

// One tensor entry with the given JSON fields.
Bytes one(const std::string& fields, size_t data_bytes = 8) {
  return make_image("{\"model.w\":{" + fields + "}}", filled(data_bytes));
}

// A small valid file written by hand: three tensors, unaligned data section.
Bytes small_valid() {
  return make_image(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"I32","shape":[],"data_offsets":[8,12]},"c":{"dtype":"U8","shape":[3],"data_offsets":[12,15]}})",
                    filled(15));
}

TEST(SafetensorsBad, SmallValidFileParses) {
  auto f = SafetensorsFile::parse(small_valid(), kName);
  EXPECT_EQ(f->tensors().size(), 3u);
}

TEST(SafetensorsBad, TooShortForLength) {
  for (size_t n = 0; n < 8; ++n) expect_bad(Bytes(n), {"too short"});
}

TEST(SafetensorsBad, TruncatedAtEveryCutPoint) {
  const Bytes img = small_valid();
  for (size_t cut = 0; cut < img.size(); ++cut) {
    const Bytes t(img.begin(), img.begin() + cut);
    try {
      SafetensorsFile::parse(t, kName);
      ADD_FAILURE() << "cut at " << cut << " parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(kName), std::string::npos) << e.what();
    }
  }
}

TEST(SafetensorsBad, TruncatedDataNamesTensor) {
  Bytes img = small_valid();
  img.pop_back();
  expect_bad(img, {"'c'", "past the end", "truncated"});
}

TEST(SafetensorsBad, HeaderLengthLargerThanFile) {
  Bytes img = make_image("{}");
  img[0] = std::byte{0xFF};
  expect_bad(img, {"header length 255", "larger than"});
  Bytes huge = make_image("{}");
  for (int i = 0; i < 8; ++i) huge[i] = std::byte{0xFF};  // 2^64 - 1
  expect_bad(huge, {"header length 18446744073709551615"});
}

TEST(SafetensorsBad, HeaderLengthOverLimit) {
  // 100 MiB + 1 announced, and the file really is that long.
  Bytes img(8 + (100u << 20) + 1, std::byte{' '});
  const uint64_t n = (100u << 20) + 1;
  std::memcpy(img.data(), &n, 8);
  expect_bad(img, {"exceeds the limit"});
}

TEST(SafetensorsBad, HeaderTooSmall) {
  expect_bad(make_image(""), {"too small"});
  expect_bad(make_image("{"), {"too small"});
}

TEST(SafetensorsBad, FlippedBitsNeverCrash) {
  const Bytes img = small_valid();
  size_t parsed = 0, rejected = 0;
  for (size_t pos = 0; pos < img.size(); ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      Bytes t = img;
      t[pos] ^= static_cast<std::byte>(1 << bit);
      try {
        auto f = SafetensorsFile::parse(t, kName);
        for (const auto& info : f->tensors()) {  // every view must lie inside the image
          const TensorView v = f->view(info);
          ASSERT_GE(v.data, t.data());
          ASSERT_LE(v.data + v.nbytes(), t.data() + t.size());
        }
        ++parsed;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(kName), std::string::npos) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(parsed, 0u);  // flips inside the data section, names, metadata values
  EXPECT_GT(rejected, 0u);
}

TEST(SafetensorsBad, InvalidJson) {
  expect_bad(make_image("{\"a\":}"), {"not valid JSON"});
  expect_bad(make_image("{\"a\":{\"dtype\":\"F16\",}}"), {"not valid JSON"});
  expect_bad(make_image("{} trailing"), {"not valid JSON"});
  expect_bad(make_image("{\"a\":\"\xFF\xFE\"}"), {"not valid JSON"});  // invalid UTF-8
  expect_bad(make_image("{/*c*/}"), {"not valid JSON"});
  expect_bad(make_image(std::string("{\0}", 3)), {"not valid JSON"});
}

TEST(SafetensorsBad, HeaderNotAnObject) {
  expect_bad(make_image("[1,2]"), {"expected an object"});
  expect_bad(make_image("42"), {"expected an object"});
  expect_bad(make_image("\"x\""), {"expected an object"});
}

TEST(SafetensorsBad, DeepNesting) {
  expect_bad(make_image(std::string(5000, '[') + std::string(5000, ']')), {"nested deeper"});
  expect_bad(make_image("{\"a\":" + std::string(20, '[') + std::string(20, ']') + "}"), {"nested deeper"});
}

TEST(SafetensorsBad, EntryNotAnObject) {
  expect_bad(make_image(R"({"model.w":[1,2]})"), {"'model.w'", "expected an object"});
}

TEST(SafetensorsBad, WrongDtypeTag) {
  expect_bad(one(R"("dtype":"F17","shape":[4],"data_offsets":[0,8])"), {"'model.w'", "unknown dtype 'F17'"});
  expect_bad(one(R"("dtype":"f16","shape":[4],"data_offsets":[0,8])"), {"'model.w'", "unknown dtype 'f16'"});
  expect_bad(one(R"("dtype":16,"shape":[4],"data_offsets":[0,8])"), {"'model.w'", "'dtype' is integer"});
  expect_bad(one(R"("shape":[4],"data_offsets":[0,8])"), {"'model.w'", "'dtype' is missing"});
}

TEST(SafetensorsBad, ShapeNotArrayOfNonNegativeIntegers) {
  expect_bad(one(R"("dtype":"F16","shape":4,"data_offsets":[0,8])"), {"'model.w'", "'shape'"});
  expect_bad(one(R"("dtype":"F16","data_offsets":[0,8])"), {"'model.w'", "'shape' is missing"});
  expect_bad(one(R"("dtype":"F16","shape":[-4],"data_offsets":[0,8])"), {"'model.w'", "shape[0]", "non-negative"});
  expect_bad(one(R"("dtype":"F16","shape":[2,-2],"data_offsets":[0,8])"), {"'model.w'", "shape[1]"});
  expect_bad(one(R"("dtype":"F16","shape":[4.0],"data_offsets":[0,8])"), {"'model.w'", "floating-point"});
  expect_bad(one(R"("dtype":"F16","shape":[1.5],"data_offsets":[0,8])"), {"'model.w'", "shape[0]"});
  expect_bad(one(R"("dtype":"F16","shape":["4"],"data_offsets":[0,8])"), {"'model.w'", "string"});
  expect_bad(one(R"("dtype":"F16","shape":[null],"data_offsets":[0,8])"), {"'model.w'", "null"});
  expect_bad(one(R"("dtype":"F16","shape":[1e30],"data_offsets":[0,8])"), {"'model.w'", "shape[0]"});
}

TEST(SafetensorsBad, NumelOverflow) {
  expect_bad(one(R"("dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,8])"), {"'model.w'", "overflows"});
  expect_bad(one(R"("dtype":"F16","shape":[18446744073709551615],"data_offsets":[0,8])"), {"'model.w'", "overflows"});
  // Fits int64 as a count, but not as bytes.
  expect_bad(one(R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8])"), {"'model.w'", "overflows"});
  // A zero later in the shape does not excuse an overflowing prefix.
  expect_bad(one(R"("dtype":"F16","shape":[4294967296,4294967296,0],"data_offsets":[0,0])"), {"'model.w'", "overflows"});
}

TEST(SafetensorsBad, ShapeByteRangeMismatch) {
  expect_bad(one(R"("dtype":"F16","shape":[3],"data_offsets":[0,8])"), {"'model.w'", "span 8 bytes", "needs 6 bytes"});
  expect_bad(one(R"("dtype":"F32","shape":[4],"data_offsets":[0,8])"), {"'model.w'", "needs 16 bytes"});
  expect_bad(one(R"("dtype":"I32","shape":[],"data_offsets":[0,0])"), {"'model.w'", "needs 4 bytes"});
}

TEST(SafetensorsBad, DataOffsetsMalformed) {
  expect_bad(one(R"("dtype":"F16","shape":[4])"), {"'model.w'", "'data_offsets' is missing"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[0])"), {"'model.w'", "data_offsets"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[0,8,9])"), {"'model.w'", "data_offsets"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[-8,0])"), {"'model.w'", "non-negative"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[0.0,8])"), {"'model.w'", "non-negative integers"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":{"a":0,"b":8})"), {"'model.w'", "data_offsets"});
  expect_bad(one(R"("dtype":"F16","shape":[0],"data_offsets":[8,0])"), {"'model.w'", "begin after end"});
}

TEST(SafetensorsBad, RangeOutsideFile) {
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[4,12])"), {"'model.w'", "past the end", "8 bytes"});
  expect_bad(one(R"("dtype":"F16","shape":[4],"data_offsets":[18446744073709551607,18446744073709551615])"),
             {"'model.w'"});
  // Even an empty tensor may not point past the data.
  expect_bad(one(R"("dtype":"F16","shape":[0],"data_offsets":[9,9])"), {"'model.w'", "past the end"});
}

TEST(SafetensorsBad, OverlappingRanges) {
  const Bytes img = make_image(R"({"first":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
                               R"("second":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}})",
                               filled(10));
  expect_bad(img, {"'first'", "'second'", "overlap"});
  const Bytes same = make_image(R"({"x":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
                                R"("y":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}})",
                                filled(8));
  expect_bad(same, {"'x'", "'y'", "overlap"});
  // Contained range.
  const Bytes inside = make_image(R"({"big":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                                  R"("small":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                                  filled(16));
  expect_bad(inside, {"'big'", "'small'", "overlap"});
}

TEST(SafetensorsBad, GapsAndEmptyTensorsDoNotOverlap) {
  // Gaps between tensors and trailing bytes are tolerated; empty ranges never overlap.
  const Bytes img = make_image(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                               R"("e":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},)"
                               R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                               filled(9));
  EXPECT_EQ(SafetensorsFile::parse(img, kName)->tensors().size(), 3u);
}

TEST(SafetensorsBad, DuplicateTensorNames) {
  const Bytes img = make_image(R"({"model.w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                               R"("model.w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                               filled(4));
  expect_bad(img, {"'model.w'", "twice"});
  // A duplicate field inside an entry is as ambiguous.
  expect_bad(one(R"("dtype":"F16","dtype":"I16","shape":[4],"data_offsets":[0,8])"), {"'dtype'", "twice"});
}

TEST(SafetensorsBad, MetadataNotObjectOfStrings) {
  expect_bad(make_image(R"({"__metadata__":[1]})"), {"__metadata__", "expected an object"});
  expect_bad(make_image(R"({"__metadata__":{"format":1}})"), {"__metadata__", "'format'", "expected a string"});
  expect_bad(make_image(R"({"__metadata__":{"a":{"b":"c"}}})"), {"__metadata__", "'a'"});
}

TEST(SafetensorsBad, EmptyTensorName) {
  expect_bad(make_image(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"), {"empty name"});
}

TEST(SafetensorsBad, ControlBytesInNamesAreEscapedInMessages) {
  const Bytes img = make_image("{\"evil\\u001b[31m\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}");
  try {
    SafetensorsFile::parse(img, kName);
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\x1b'), std::string::npos);
    EXPECT_NE(msg.find("evil\\x1b[31m"), std::string::npos) << msg;
  }
}

TEST(SafetensorsBad, OpenNamesThePath) {
  test::TempDir tmp;
  expect_error([&] { SafetensorsFile::open(tmp.file("missing.safetensors")); }, ErrorKind::kIo,
               {"missing.safetensors"});
  expect_error([&] { SafetensorsFile::open(tmp.path()); }, ErrorKind::kIo, {tmp.path(), "not a regular file"});
  test::write_bytes(tmp.file("empty.safetensors"), {});
  expect_error([&] { SafetensorsFile::open(tmp.file("empty.safetensors")); }, ErrorKind::kFormat,
               {"empty.safetensors", "too short"});
  Bytes trunc = small_valid();
  trunc.resize(trunc.size() - 3);
  test::write_bytes(tmp.file("t.safetensors"), trunc);
  expect_error([&] { SafetensorsFile::open(tmp.file("t.safetensors")); }, ErrorKind::kFormat,
               {"t.safetensors", "'c'"});
}

}  // namespace
}  // namespace trellis
