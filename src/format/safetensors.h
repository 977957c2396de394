// format/safetensors.h: strict, zero-copy safetensors reading and streaming, atomic writing.
//
// Reader goals: mmap the file, parse and validate every header field before any tensor is
// touched, hand out views into the mapping (data may be unaligned: ExLlamaV3 does not pad the
// header, spec 2.2). Every failure is a trellis::Error (kFormat/kIo) whose message names the
// file, the tensor and what was wrong; no input can cause a crash or an out-of-bounds read.
// Checks: file >= 8 bytes; header length <= file size - 8 and <= 100 MiB; header is valid UTF-8
// JSON object; each entry has a known dtype, an integer shape (non-negative dims), data_offsets
// [begin, end] with begin <= end <= data size and end - begin == numel * dtype size, no
// overflow; ranges do not overlap; no duplicate names; "__metadata__" (optional) is an object of
// strings.
// Also: no duplicate keys in any JSON object, nesting at most 8 deep, tensor names non-empty.
// Tolerated: gaps between tensors and bytes after the last one (the Rust reference reader
// rejects both; nothing here depends on contiguity), trailing spaces in the header (padding),
// extra keys inside an entry (ignored).
//
// Writer goals: produce files that ExLlamaV3 loads (minified JSON header, tensors back to back
// in insertion order) and never leave a half-written file under the final name.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/mmap_file.h"
#include "core/tensor.h"

namespace trellis {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offset of the data, relative to the start of the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws trellis::Error naming the file on any problem.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Validates an in-memory image (used by the fuzzer and by tests). `name` is used in messages.
  static std::unique_ptr<SafetensorsFile> parse(std::span<const std::byte> bytes, const std::string& name);

  const std::string& path() const { return path_; }
  // Tensors in the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  // View of a tensor's bytes inside the mapping. Throws kFormat naming the tensor if absent.
  TensorView view(const std::string& name) const;
  TensorView view(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Absolute byte offset of the data section (8 + header length); tensor i's bytes start at
  // data_offset() + tensors()[i].begin. Not necessarily a multiple of 8 (spec 2.2).
  uint64_t data_offset() const { return data_start_; }

 private:
  std::string path_;
  MappedFile file_;
  std::span<const std::byte> image_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The parsed model.safetensors.index.json of a sharded checkpoint.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::vector<std::string> files;                 // distinct shard file names, sorted
  std::optional<uint64_t> total_size;             // metadata.total_size if present
};
// Validates index JSON text: an object whose "weight_map" is a non-empty object of strings, each
// a plain file name (no directory part, not "." or ".."), no duplicate keys; "metadata", if
// present, an object whose "total_size", if present, is a non-negative integer. `path` is used
// in messages. Throws kFormat.
SafetensorsIndex parse_safetensors_index(const std::string& text, const std::string& path);

// All tensors of a model directory: a single `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (validated: JSON shape, every listed file exists and holds the
// tensors mapped to it, no tensor in two shards), or failing both every `*.safetensors` file in
// the directory. With an index, a tensor found in a shard but mapped to another shard is an
// error; one the index does not list at all is used with a warning; shards the index does not
// name are ignored. Without an index, a name in two files is an error.
class TensorStore {
 public:
  static std::unique_ptr<TensorStore> open_dir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws kFormat if absent
  TensorView view(const std::string& name) const;          // throws kFormat if absent
  // File (base name) that holds the tensor.
  std::string file_of(const std::string& name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Streaming writer. Declare every tensor first (name, dtype, shape), then call begin_data() and
// write each tensor's bytes in declaration order (possibly in several pieces), then commit().
// Writes to "<path>.tmp-<pid>" and renames on commit; destroyed uncommitted, it deletes the
// temporary. Throws kInvalidArgument on duplicate names or byte counts that do not match.
// declare() rejects with kInvalidArgument: a dtype ExLlamaV3 cannot load (dtype_exllamav3_loadable,
// spec 2.2), an empty name or "__metadata__", negative dims, a byte size that overflows. The
// header is minified JSON in declaration order ("__metadata__" first if set), padded with
// spaces so that the data section starts at a multiple of 8 (allowed by the safetensors spec;
// ExLlamaV3 and HF readers accept padded and unpadded headers alike). A write() may span
// several tensors; commit() without begin_data() is allowed when every tensor is empty.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path);
  ~SafetensorsWriter();

  void declare(const std::string& name, DType dtype, const Shape& shape);
  void set_metadata(const std::string& key, const std::string& value);
  void begin_data();
  void write(std::span<const std::byte> bytes);
  void commit();

  // Convenience: write a whole file of in-memory tensors at once.
  struct Item {
    std::string name;
    DType dtype;
    Shape shape;
    std::span<const std::byte> data;
  };
  static void write_file(const std::string& path, const std::vector<Item>& items);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis
