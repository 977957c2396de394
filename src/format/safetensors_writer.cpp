// format/safetensors_writer.cpp: SafetensorsWriter, streaming and atomic.
//
// The header must be complete before the first data byte, so the writer takes every tensor's
// dtype and shape up front, then streams bytes in declaration order. Offsets are assigned back
// to back with no gaps, exactly as ExLlamaV3's own writer does (spec 2.2); the only difference
// is trailing spaces in the header so that the data section starts 8-byte aligned.
#include <bit>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/mmap_file.h"
#include "format/format_util.h"
#include "format/safetensors.h"

namespace trellis {

using format_detail::safe_quote;

struct SafetensorsWriter::Impl {
  enum class State { kDeclaring, kWriting, kCommitted };
  std::string path;
  State state = State::kDeclaring;
  std::vector<TensorInfo> tensors;  // in declaration order, offsets assigned as declared
  std::set<std::string> names;
  std::vector<std::pair<std::string, std::string>> metadata;
  uint64_t total = 0;    // bytes of the data section
  uint64_t written = 0;  // data bytes written so far
  std::unique_ptr<AtomicFileWriter> out;

  // Name of the tensor that data byte `offset` belongs to (for messages).
  std::string tensor_at(uint64_t offset) const {
    for (const auto& t : tensors)
      if (offset < t.end) return safe_quote(t.name);
    return "(none)";
  }
};

SafetensorsWriter::SafetensorsWriter(std::string path) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
}

SafetensorsWriter::~SafetensorsWriter() = default;  // an uncommitted AtomicFileWriter removes its temporary

void SafetensorsWriter::declare(const std::string& name, DType dtype, const Shape& shape) {
  Impl& w = *impl_;
  if (w.state != Impl::State::kDeclaring)
    fail(ErrorKind::kInvalidArgument, "{}: tensor {} declared after begin_data()", w.path, safe_quote(name));
  if (name.empty() || name == "__metadata__")
    fail(ErrorKind::kInvalidArgument, "{}: invalid tensor name {}", w.path, safe_quote(name));
  if (!dtype_exllamav3_loadable(dtype))
    fail(ErrorKind::kInvalidArgument, "{}: tensor {}: dtype {} cannot be loaded by ExLlamaV3 (allowed: I32 I64 I8 "
         "F8_E8M0 I16 F16 BF16 F32 F8_E4M3 U8; spec 2.2)", w.path, safe_quote(name), dtype_name(dtype));
  const auto nbytes = format_detail::checked_nbytes(shape, dtype);
  if (!nbytes)
    fail(ErrorKind::kInvalidArgument, "{}: tensor {}: shape {} has a negative dim or its size overflows", w.path,
         safe_quote(name), shape_to_string(shape));
  if (!w.names.insert(name).second)
    fail(ErrorKind::kInvalidArgument, "{}: tensor {} declared twice", w.path, safe_quote(name));
  uint64_t end = 0;
  if (__builtin_add_overflow(w.total, *nbytes, &end))
    fail(ErrorKind::kInvalidArgument, "{}: tensor {}: total data size overflows 64 bits", w.path, safe_quote(name));
  w.tensors.push_back(TensorInfo{name, dtype, shape, w.total, end});
  w.total = end;
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  Impl& w = *impl_;
  if (w.state != Impl::State::kDeclaring)
    fail(ErrorKind::kInvalidArgument, "{}: metadata {} set after begin_data()", w.path, safe_quote(key));
  for (auto& [k, v] : w.metadata)
    if (k == key) {
      v = value;
      return;
    }
  w.metadata.emplace_back(key, value);
}

void SafetensorsWriter::begin_data() {
  Impl& w = *impl_;
  if (w.state != Impl::State::kDeclaring)
    fail(ErrorKind::kInvalidArgument, "{}: begin_data() called twice", w.path);

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!w.metadata.empty()) {
    auto& md = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : w.metadata) md[k] = v;
  }
  for (const auto& t : w.tensors) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {t.begin, t.end};
    header[t.name] = std::move(e);
  }
  std::string text;
  try {
    text = header.dump();  // minified
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kInvalidArgument, "{}: a tensor name or metadata string is not valid UTF-8: {}", w.path, e.what());
  }
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  w.out = std::make_unique<AtomicFileWriter>(w.path);
  const uint64_t len = text.size();
  w.out->write(&len, 8);  // little-endian host (static_assert in the reader)
  w.out->write(text.data(), text.size());
  w.state = Impl::State::kWriting;
}

void SafetensorsWriter::write(std::span<const std::byte> bytes) {
  Impl& w = *impl_;
  if (w.state != Impl::State::kWriting)
    fail(ErrorKind::kInvalidArgument, "{}: write() {}", w.path,
         w.state == Impl::State::kDeclaring ? "before begin_data()" : "after commit()");
  if (bytes.size() > w.total - w.written)
    fail(ErrorKind::kInvalidArgument, "{}: write of {} bytes at data offset {} (tensor {}) goes past the {} declared "
         "bytes", w.path, bytes.size(), w.written, w.tensor_at(w.written), w.total);
  w.out->write(bytes);
  w.written += bytes.size();
}

void SafetensorsWriter::commit() {
  Impl& w = *impl_;
  if (w.state == Impl::State::kDeclaring) begin_data();
  if (w.state == Impl::State::kCommitted) fail(ErrorKind::kInvalidArgument, "{}: commit() called twice", w.path);
  if (w.written != w.total)
    fail(ErrorKind::kInvalidArgument, "{}: commit() after {} of {} data bytes; tensor {} is incomplete", w.path,
         w.written, w.total, w.tensor_at(w.written));
  w.out->commit();
  w.state = Impl::State::kCommitted;
}

void SafetensorsWriter::write_file(const std::string& path, const std::vector<Item>& items) {
  SafetensorsWriter w(path);
  for (const auto& it : items) w.declare(it.name, it.dtype, it.shape);
  for (const auto& it : items) {
    const uint64_t expected = *format_detail::checked_nbytes(it.shape, it.dtype);
    if (it.data.size() != expected)
      fail(ErrorKind::kInvalidArgument, "{}: tensor {}: {} bytes given, {} {} needs {}", path, safe_quote(it.name),
           it.data.size(), dtype_name(it.dtype), shape_to_string(it.shape), expected);
  }
  w.begin_data();
  for (const auto& it : items) w.write(it.data);
  w.commit();
}

}  // namespace trellis
