// SafetensorsWriter -> SafetensorsFile round trips, hand-built images the writer cannot make
// (unaligned data, dtypes ExLlamaV3 cannot load), and the writer's own contract.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "format/safetensors.h"
#include "format_test_helpers.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::Bytes;
using test::expect_error;
using test::filled;
using test::make_image;

constexpr DType kAllDTypes[] = {DType::kF64,    DType::kF32,    DType::kF16,    DType::kBF16, DType::kI64,  DType::kI32,
                                DType::kI16,    DType::kI8,     DType::kU8,     DType::kBool, DType::kF8E4M3,
                                DType::kF8E5M2, DType::kF8E8M0, DType::kU16,    DType::kU32,  DType::kU64};

TEST(FormatSafetensors, RoundTripEveryLoadableDtype) {
  test::TempDir tmp;
  const std::string path = tmp.file("all.safetensors");
  std::vector<Bytes> data;
  std::vector<SafetensorsWriter::Item> items;
  int i = 0;
  for (DType t : kAllDTypes) {
    if (!dtype_exllamav3_loadable(t)) continue;
    const Shape shape{3, 5};
    data.push_back(filled(15 * dtype_size(t), static_cast<uint8_t>(i)));
    items.push_back({"t." + std::string(dtype_name(t)), t, shape, {}});
    ++i;
  }
  for (size_t j = 0; j < items.size(); ++j) items[j].data = data[j];
  SafetensorsWriter::write_file(path, items);

  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), items.size());
  EXPECT_EQ(f->data_offset() % 8, 0u) << "writer pads the header to 8-byte alignment";
  for (size_t j = 0; j < items.size(); ++j) {
    const TensorView v = f->view(items[j].name);
    EXPECT_EQ(v.dtype, items[j].dtype);
    EXPECT_EQ(v.shape, items[j].shape);
    ASSERT_EQ(v.nbytes(), data[j].size());
    EXPECT_EQ(std::memcmp(v.data, data[j].data(), data[j].size()), 0) << items[j].name;
  }
  // Tensors are listed in data order, i.e. declaration order, back to back.
  for (size_t j = 0; j < items.size(); ++j) EXPECT_EQ(f->tensors()[j].name, items[j].name);
  for (size_t j = 1; j < items.size(); ++j) EXPECT_EQ(f->tensors()[j].begin, f->tensors()[j - 1].end);
}

TEST(FormatSafetensors, ReaderAcceptsEveryDtypeTag) {
  // Dtypes the writer refuses (U16, BOOL, ...) are still readable: hand-built image.
  std::string header = "{";
  Bytes data;
  for (DType t : kAllDTypes) {
    const size_t n = 2 * dtype_size(t);
    if (header.size() > 1) header += ",";
    header += fmt::format("\"x{}\":{{\"dtype\":\"{}\",\"shape\":[2],\"data_offsets\":[{},{}]}}", dtype_name(t),
                          dtype_name(t), data.size(), data.size() + n);
    const Bytes d = filled(n, static_cast<uint8_t>(data.size()));
    data.insert(data.end(), d.begin(), d.end());
  }
  header += "}";
  const Bytes img = make_image(header, data);
  auto f = SafetensorsFile::parse(img, "tags.safetensors");
  ASSERT_EQ(f->tensors().size(), std::size(kAllDTypes));
  for (DType t : kAllDTypes) {
    const TensorView v = f->view("x" + std::string(dtype_name(t)));
    EXPECT_EQ(v.dtype, t);
    EXPECT_EQ(v.nbytes(), 2 * dtype_size(t));
  }
}

TEST(FormatSafetensors, EmptyAndScalarTensors) {
  test::TempDir tmp;
  const std::string path = tmp.file("e.safetensors");
  const Bytes scalar = filled(4), one = filled(2, 9);
  SafetensorsWriter::write_file(path, {
      {"empty0", DType::kF16, {0}, {}},
      {"empty_mid", DType::kF32, {4, 0, 7}, {}},
      {"scalar", DType::kI32, {}, scalar},
      {"empty_last", DType::kI8, {0, 3}, {}},
      {"one", DType::kBF16, {1}, one},
  });
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 5u);
  EXPECT_EQ(f->view("empty0").nbytes(), 0u);
  EXPECT_EQ(f->view("empty_mid").shape, (Shape{4, 0, 7}));
  EXPECT_EQ(f->view("empty_mid").numel(), 0);
  const TensorView s = f->view("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  ASSERT_EQ(s.nbytes(), 4u);
  EXPECT_EQ(std::memcmp(s.data, scalar.data(), 4), 0);
  EXPECT_EQ(std::memcmp(f->view("one").data, one.data(), 2), 0);
}

TEST(FormatSafetensors, FileWithNoTensors) {
  test::TempDir tmp;
  const std::string path = tmp.file("none.safetensors");
  SafetensorsWriter w(path);
  w.commit();
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->tensors().empty());
  // Also the minimal hand-made file "{}".
  const Bytes img = make_image("{}");
  EXPECT_TRUE(SafetensorsFile::parse(img, "min")->tensors().empty());
}

TEST(FormatSafetensors, UnalignedDataSection) {
  // Header of 61 bytes: data starts at 69, like ExLlamaV3's unpadded files (spec 2.2).
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  const std::string padded = header + std::string(61 - header.size(), ' ');
  ASSERT_EQ(padded.size(), 61u);
  const Bytes data = filled(12, 3);
  const Bytes img = make_image(padded, data);
  for (int shift = 0; shift < 8; ++shift) {
    // Also place the whole image at every offset of a buffer: pointers are never assumed aligned.
    Bytes buf(shift, std::byte{0});
    buf.insert(buf.end(), img.begin(), img.end());
    auto f = SafetensorsFile::parse(std::span<const std::byte>(buf).subspan(shift), "unaligned.safetensors");
    EXPECT_EQ(f->data_offset(), 69u);
    const TensorView v = f->view("a");
    EXPECT_EQ(v.data, buf.data() + shift + 69);
    EXPECT_EQ(std::memcmp(v.data, data.data(), 12), 0);
  }
}

TEST(FormatSafetensors, UnalignedHeaderOnDisk) {
  test::TempDir tmp;
  std::string header = R"({"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I16","shape":[1],"data_offsets":[12,14]}})";
  while ((8 + header.size()) % 8 != 3) header += ' ';  // trailing whitespace is valid JSON
  const Bytes data = filled(14, 7);
  test::write_bytes(tmp.file("u.safetensors"), make_image(header, data));
  auto f = SafetensorsFile::open(tmp.file("u.safetensors"));
  EXPECT_EQ(f->path(), tmp.file("u.safetensors"));
  EXPECT_EQ(std::memcmp(f->view("b").data, data.data() + 12, 2), 0);
  EXPECT_EQ(f->tensors()[0].name, "w");  // ordered by offset, not by name
}

TEST(FormatSafetensors, MetadataRoundTrip) {
  test::TempDir tmp;
  const std::string path = tmp.file("m.safetensors");
  SafetensorsWriter w(path);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "x");
  w.set_metadata("format", "trellis");  // last value wins
  w.declare("t", DType::kF16, {2});
  w.begin_data();
  w.write(filled(4));
  w.commit();
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "trellis");
  EXPECT_EQ(f->metadata().at("note"), "x");
  EXPECT_EQ(f->tensors().size(), 1u);
}

TEST(FormatSafetensors, WriterHeaderIsMinifiedPaddedJson) {
  test::TempDir tmp;
  const std::string path = tmp.file("h.safetensors");
  SafetensorsWriter::write_file(path, {{"z", DType::kI16, {1}, filled(2)}, {"a", DType::kI16, {1}, filled(2)}});
  const Bytes b = test::read_bytes(path);
  uint64_t n;
  std::memcpy(&n, b.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header(reinterpret_cast<const char*>(b.data()) + 8, n);
  const std::string expected = R"({"z":{"dtype":"I16","shape":[1],"data_offsets":[0,2]},"a":{"dtype":"I16","shape":[1],"data_offsets":[2,4]}})";
  EXPECT_EQ(header.substr(0, expected.size()), expected);
  EXPECT_EQ(header.find_first_not_of(' ', expected.size()), std::string::npos);
  EXPECT_EQ(b.size(), 8 + n + 4);
}

TEST(FormatSafetensors, WriterStreamsInPieces) {
  test::TempDir tmp;
  const std::string path = tmp.file("p.safetensors");
  const Bytes a = filled(64, 1), b = filled(6, 2);
  SafetensorsWriter w(path);
  w.declare("a", DType::kF32, {16});
  w.declare("b", DType::kI16, {3});
  w.begin_data();
  w.write(std::span<const std::byte>(a).subspan(0, 10));
  w.write(std::span<const std::byte>(a).subspan(10, 54));
  w.write(std::span<const std::byte>{});  // empty writes are fine
  w.write(b);
  w.commit();
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(std::memcmp(f->view("a").data, a.data(), 64), 0);
  EXPECT_EQ(std::memcmp(f->view("b").data, b.data(), 6), 0);
}

TEST(FormatSafetensors, WriterRejectsDtypesExllamav3CannotLoad) {
  test::TempDir tmp;
  for (DType t : {DType::kU16, DType::kU32, DType::kU64, DType::kBool, DType::kF64, DType::kF8E5M2}) {
    SafetensorsWriter w(tmp.file("x.safetensors"));
    expect_error([&] { w.declare("model.layers.0.bad", t, {4}); }, ErrorKind::kInvalidArgument,
                 {"x.safetensors", "model.layers.0.bad", std::string(dtype_name(t)), "ExLlamaV3"});
  }
}

TEST(FormatSafetensors, WriterRejectsMisuse) {
  test::TempDir tmp;
  const std::string path = tmp.file("w.safetensors");
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::kF16, {2});
    expect_error([&] { w.declare("a", DType::kF16, {2}); }, ErrorKind::kInvalidArgument, {"w.safetensors", "'a'", "twice"});
    expect_error([&] { w.declare("", DType::kF16, {2}); }, ErrorKind::kInvalidArgument, {"invalid tensor name"});
    expect_error([&] { w.declare("__metadata__", DType::kF16, {2}); }, ErrorKind::kInvalidArgument, {"__metadata__"});
    expect_error([&] { w.declare("neg", DType::kF16, {2, -1}); }, ErrorKind::kInvalidArgument, {"'neg'", "[2, -1]"});
    expect_error([&] { w.declare("big", DType::kF32, {int64_t{1} << 40, int64_t{1} << 30}); },
                 ErrorKind::kInvalidArgument, {"'big'", "overflow"});
    expect_error([&] { w.write(filled(4)); }, ErrorKind::kInvalidArgument, {"before begin_data"});
    w.begin_data();
    expect_error([&] { w.declare("late", DType::kF16, {2}); }, ErrorKind::kInvalidArgument, {"'late'", "after begin_data"});
    expect_error([&] { w.write(filled(5)); }, ErrorKind::kInvalidArgument, {"w.safetensors", "'a'", "past"});
    w.write(filled(2));
    expect_error([&] { w.commit(); }, ErrorKind::kInvalidArgument, {"w.safetensors", "'a'", "incomplete"});
  }
  // The failed writer left nothing behind: neither the file nor its temporary.
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));
}

TEST(FormatSafetensors, WriteFileChecksSizes) {
  test::TempDir tmp;
  const Bytes three = filled(3);
  expect_error([&] { SafetensorsWriter::write_file(tmp.file("s.safetensors"), {{"t", DType::kF16, {2}, three}}); },
               ErrorKind::kInvalidArgument, {"s.safetensors", "'t'", "3 bytes", "needs 4"});
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));
}

TEST(FormatSafetensors, CommitReplacesAtomically) {
  test::TempDir tmp;
  const std::string path = tmp.file("r.safetensors");
  SafetensorsWriter::write_file(path, {{"old", DType::kF16, {1}, filled(2)}});
  {
    SafetensorsWriter w(path);
    w.declare("new", DType::kF16, {1});
    w.begin_data();
    // Mid-write, the old file is still intact under the final name.
    EXPECT_NE(SafetensorsFile::open(path)->find("old"), nullptr);
  }  // abandoned
  EXPECT_NE(SafetensorsFile::open(path)->find("old"), nullptr);
  SafetensorsWriter::write_file(path, {{"new", DType::kF16, {1}, filled(2)}});
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->find("old"), nullptr);
  EXPECT_NE(f->find("new"), nullptr);
}

TEST(FormatSafetensors, ViewOfMissingTensorNamesIt) {
  const Bytes img = make_image("{}");
  auto f = SafetensorsFile::parse(img, "mem.safetensors");
  EXPECT_EQ(f->find("nope"), nullptr);
  expect_error([&] { f->view("nope"); }, ErrorKind::kFormat, {"mem.safetensors", "'nope'"});
  TensorInfo forged{"forged", DType::kF32, {4}, 0, 16};
  expect_error([&] { f->view(forged); }, ErrorKind::kInvalidArgument, {"'forged'", "outside"});
}

TEST(FormatSafetensors, NonAsciiNamesRoundTrip) {
  test::TempDir tmp;
  const std::string path = tmp.file("n.safetensors");
  const std::string name = "model.\xC3\xA9t\xC3\xA9.weight";  // "été" in UTF-8
  SafetensorsWriter::write_file(path, {{name, DType::kF16, {1}, filled(2)}});
  EXPECT_NE(SafetensorsFile::open(path)->find(name), nullptr);
  SafetensorsWriter w(tmp.file("bad.safetensors"));
  w.declare("bad\xFF", DType::kF16, {0});
  expect_error([&] { w.begin_data(); }, ErrorKind::kInvalidArgument, {"UTF-8"});
}

}  // namespace
}  // namespace trellis
