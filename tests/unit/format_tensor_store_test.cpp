// TensorStore over single files, index-sharded directories and plain globs, plus the index
// parser on its own.
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

// Writes `names` as small I16 tensors into dir/file; data = filled(..., seed of the name length).
void write_shard(const std::string& dir, const std::string& file, const std::vector<std::string>& names) {
  std::vector<Bytes> data;
  for (const auto& n : names) data.push_back(filled(4, static_cast<uint8_t>(n.size())));
  std::vector<SafetensorsWriter::Item> items;
  for (size_t i = 0; i < names.size(); ++i) items.push_back({names[i], DType::kI16, {2}, data[i]});
  SafetensorsWriter::write_file(dir + "/" + file, items);
}

std::string index_json(const std::vector<std::pair<std::string, std::string>>& map) {
  std::string s = R"({"metadata":{"total_size":123},"weight_map":{)";
  for (size_t i = 0; i < map.size(); ++i)
    s += (i ? "," : "") + fmt::format("\"{}\":\"{}\"", map[i].first, map[i].second);
  return s + "}}";
}

constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
constexpr const char* kShard2 = "model-00002-of-00002.safetensors";

void make_sharded(const test::TempDir& tmp) {
  write_shard(tmp.path(), kShard1, {"a.weight", "b.weight"});
  write_shard(tmp.path(), kShard2, {"c.weight"});
  test::write_text(tmp.file("model.safetensors.index.json"),
                   index_json({{"a.weight", kShard1}, {"b.weight", kShard1}, {"c.weight", kShard2}}));
}

TEST(FormatTensorStore, SingleFile) {
  test::TempDir tmp;
  write_shard(tmp.path(), "model.safetensors", {"x", "y"});
  write_shard(tmp.path(), "other.safetensors", {"ignored"});  // model.safetensors wins
  auto s = TensorStore::open_dir(tmp.path());
  EXPECT_EQ(s->names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(s->file_of("x"), "model.safetensors");
  EXPECT_FALSE(s->contains("ignored"));
  EXPECT_EQ(s->files().size(), 1u);
}

TEST(FormatTensorStore, ShardedWithIndex) {
  test::TempDir tmp;
  make_sharded(tmp);
  write_shard(tmp.path(), "stray.safetensors", {"zzz"});  // not in the index: not used
  auto s = TensorStore::open_dir(tmp.path());
  EXPECT_EQ(s->names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(s->file_of("a.weight"), kShard1);
  EXPECT_EQ(s->file_of("c.weight"), kShard2);
  EXPECT_EQ(s->files().size(), 2u);
  const TensorView v = s->view("c.weight");
  EXPECT_EQ(v.dtype, DType::kI16);
  const Bytes expected = filled(4, 8);
  EXPECT_EQ(std::memcmp(v.data, expected.data(), 4), 0);
  EXPECT_EQ(s->info("b.weight").shape, Shape{2});
  expect_error([&] { s->info("nope"); }, ErrorKind::kFormat, {tmp.path(), "'nope'"});
  expect_error([&] { s->view("nope"); }, ErrorKind::kFormat, {"'nope'"});
  expect_error([&] { s->file_of("nope"); }, ErrorKind::kFormat, {"'nope'"});
}

TEST(FormatTensorStore, GlobWithoutIndex) {
  test::TempDir tmp;
  write_shard(tmp.path(), "b.safetensors", {"t2"});
  write_shard(tmp.path(), "a.safetensors", {"t1"});
  test::write_text(tmp.file("notes.txt"), "x");
  auto s = TensorStore::open_dir(tmp.path());
  EXPECT_EQ(s->names(), (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(s->file_of("t2"), "b.safetensors");
}

TEST(FormatTensorStore, GlobTensorInTwoFiles) {
  test::TempDir tmp;
  write_shard(tmp.path(), "a.safetensors", {"dup"});
  write_shard(tmp.path(), "b.safetensors", {"dup"});
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat,
               {"'dup'", "two files", "a.safetensors", "b.safetensors"});
}

TEST(FormatTensorStore, NoSafetensors) {
  test::TempDir tmp;
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat, {tmp.path(), "no safetensors"});
  expect_error([&] { TensorStore::open_dir(tmp.file("absent")); }, ErrorKind::kIo, {"absent", "not a directory"});
}

TEST(FormatTensorStore, IndexPointsAtMissingShard) {
  test::TempDir tmp;
  make_sharded(tmp);
  std::filesystem::remove(tmp.file(kShard2));
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat,
               {"model.safetensors.index.json", kShard2, "does not exist"});
}

TEST(FormatTensorStore, IndexNamesTensorTheShardLacks) {
  test::TempDir tmp;
  make_sharded(tmp);
  test::write_text(tmp.file("model.safetensors.index.json"),
                   index_json({{"a.weight", kShard1}, {"b.weight", kShard1}, {"c.weight", kShard2},
                               {"ghost.weight", kShard2}}));
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat,
               {"model.safetensors.index.json", "'ghost.weight'", kShard2, "no such tensor"});
}

TEST(FormatTensorStore, TensorInTwoShards) {
  test::TempDir tmp;
  make_sharded(tmp);
  write_shard(tmp.path(), kShard2, {"c.weight", "a.weight"});  // a.weight also in shard 1
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat,
               {"model.safetensors.index.json", "'a.weight'", kShard2, kShard1});
}

TEST(FormatTensorStore, TensorMappedToAnotherShard) {
  test::TempDir tmp;
  make_sharded(tmp);
  test::write_text(tmp.file("model.safetensors.index.json"),
                   index_json({{"a.weight", kShard1}, {"b.weight", kShard2}, {"c.weight", kShard2}}));
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat,
               {"'b.weight'", "stored in", kShard1, "maps it to", kShard2});
}

TEST(FormatTensorStore, UnlistedTensorIsUsedWithWarning) {
  test::TempDir tmp;
  make_sharded(tmp);
  write_shard(tmp.path(), kShard2, {"c.weight", "extra"});
  auto s = TensorStore::open_dir(tmp.path());
  EXPECT_TRUE(s->contains("extra"));
  EXPECT_EQ(s->file_of("extra"), kShard2);
}

TEST(FormatTensorStore, BadShardInsideIndexNamesShard) {
  test::TempDir tmp;
  make_sharded(tmp);
  test::write_bytes(tmp.file(kShard2), test::make_image("{oops"));
  expect_error([&] { TensorStore::open_dir(tmp.path()); }, ErrorKind::kFormat, {kShard2, "not valid JSON"});
}

TEST(FormatSafetensorsIndex, ParsesValidIndex) {
  const auto idx = parse_safetensors_index(index_json({{"a", "f2.safetensors"}, {"b", "f1.safetensors"},
                                                       {"c", "f2.safetensors"}}), "i.json");
  EXPECT_EQ(idx.weight_map.size(), 3u);
  EXPECT_EQ(idx.files, (std::vector<std::string>{"f1.safetensors", "f2.safetensors"}));
  EXPECT_EQ(idx.total_size, 123u);
  const auto no_md = parse_safetensors_index(R"({"weight_map":{"a":"x.safetensors"}})", "i.json");
  EXPECT_FALSE(no_md.total_size.has_value());
}

TEST(FormatSafetensorsIndex, RejectsMalformed) {
  auto bad = [](const std::string& text, std::initializer_list<std::string> parts) {
    std::vector<std::string> all{"idx.json"};
    all.insert(all.end(), parts.begin(), parts.end());
    try {
      parse_safetensors_index(text, "idx.json");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kFormat);
      for (const auto& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << p << " / " << e.what();
    }
  };
  bad("", {"not valid JSON"});
  bad("{", {"not valid JSON"});
  bad("[]", {"expected an object"});
  bad("{}", {"'weight_map' is missing"});
  bad(R"({"weight_map":[]})", {"'weight_map' is a array"});
  bad(R"({"weight_map":{}})", {"empty"});
  bad(R"({"weight_map":{"a":1}})", {"'a'", "expected a file name string"});
  bad(R"({"weight_map":{"a":null}})", {"'a'"});
  bad(R"({"weight_map":{"a":"../../etc/passwd"}})", {"'a'", "same directory"});
  bad(R"({"weight_map":{"a":"/abs.safetensors"}})", {"'a'", "same directory"});
  bad(R"({"weight_map":{"a":".."}})", {"'a'"});
  bad(R"({"weight_map":{"a":""}})", {"'a'"});
  bad(R"({"weight_map":{"":"x.safetensors"}})", {"empty tensor name"});
  bad(R"({"weight_map":{"a":"x.safetensors","a":"y.safetensors"}})", {"'a'", "twice"});
  bad(R"({"metadata":[],"weight_map":{"a":"x"}})", {"'metadata'"});
  bad(R"({"metadata":{"total_size":-1},"weight_map":{"a":"x"}})", {"total_size"});
  bad(R"({"metadata":{"total_size":"12"},"weight_map":{"a":"x"}})", {"total_size"});
}

}  // namespace
}  // namespace trellis
