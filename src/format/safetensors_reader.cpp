// format/safetensors_reader.cpp: SafetensorsFile, the validating zero-copy reader.
//
// Order of checks: framing (8-byte length, header inside the file), JSON syntax (strict: no
// duplicate keys), then every entry on its own (dtype, shape, offsets, sizes), then the entries
// together (overlap). Nothing is read from the data section here, so a file of any size costs
// only its header; views point straight into the mapping.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "format/format_util.h"
#include "format/safetensors.h"

namespace trellis {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian; big-endian hosts unsupported");

namespace {

using format_detail::json_type_name;
using format_detail::safe_quote;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB, as the reference implementation
// Root object -> entry object -> shape array; a little slack for unknown extra keys.
constexpr int kMaxHeaderDepth = 8;

// A JSON number that is a non-negative integer, as uint64; nullopt otherwise.
std::optional<uint64_t> as_u64(const json& j) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry,
                       uint64_t data_size) {
  const std::string tname = safe_quote(name);
  if (!entry.is_object())
    fail(ErrorKind::kFormat, "{}: tensor {}: header entry is a {}, expected an object with dtype, shape, data_offsets",
         path, tname, json_type_name(entry));
  TensorInfo info;
  info.name = name;

  const auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string())
    fail(ErrorKind::kFormat, "{}: tensor {}: 'dtype' is {}, expected a string such as \"F16\"", path, tname,
         dt == entry.end() ? "missing" : json_type_name(*dt));
  const auto& tag = dt->get_ref<const std::string&>();
  const auto dtype = dtype_from_name(tag);
  if (!dtype)
    fail(ErrorKind::kFormat, "{}: tensor {}: unknown dtype {} (expected a safetensors tag: F64 F32 F16 BF16 I64 I32 "
         "I16 I8 U8 BOOL F8_E4M3 F8_E5M2 F8_E8M0 U16 U32 U64)", path, tname, safe_quote(tag));
  info.dtype = *dtype;

  const auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array())
    fail(ErrorKind::kFormat, "{}: tensor {}: 'shape' is {}, expected an array of non-negative integers", path, tname,
         sh == entry.end() ? "missing" : json_type_name(*sh));
  // Every prefix product must fit int64: shape_numel() multiplies in this order.
  uint64_t numel = 1;
  for (size_t i = 0; i < sh->size(); ++i) {
    const json& d = (*sh)[i];
    const auto v = as_u64(d);
    if (!v)
      fail(ErrorKind::kFormat, "{}: tensor {}: shape[{}] is {} {}, expected a non-negative integer", path, tname, i,
           json_type_name(d), safe_quote(d.dump(), 40));
    if (*v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, *v, &numel) || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(ErrorKind::kFormat, "{}: tensor {}: element count of shape {} overflows 64 bits", path, tname,
           safe_quote(sh->dump(), 120));
    info.shape.push_back(static_cast<int64_t>(*v));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &nbytes))
    fail(ErrorKind::kFormat, "{}: tensor {}: byte size of {} {} overflows 64 bits", path, tname, tag,
         shape_to_string(info.shape));

  const auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2)
    fail(ErrorKind::kFormat, "{}: tensor {}: 'data_offsets' is {}, expected an array [begin, end] of two integers", path,
         tname, off == entry.end() ? "missing" : safe_quote(off->dump(), 60));
  const auto begin = as_u64((*off)[0]), end = as_u64((*off)[1]);
  if (!begin || !end)
    fail(ErrorKind::kFormat, "{}: tensor {}: data_offsets {} must be non-negative integers", path, tname,
         safe_quote(off->dump(), 60));
  if (*begin > *end)
    fail(ErrorKind::kFormat, "{}: tensor {}: data_offsets [{}, {}] has begin after end", path, tname, *begin, *end);
  if (*end > data_size)
    fail(ErrorKind::kFormat, "{}: tensor {}: data_offsets [{}, {}] reach past the end of the data section ({} bytes; "
         "file truncated?)", path, tname, *begin, *end, data_size);
  if (*end - *begin != nbytes)
    fail(ErrorKind::kFormat, "{}: tensor {}: data_offsets [{}, {}] span {} bytes, but {} {} needs {} bytes", path,
         tname, *begin, *end, *end - *begin, tag, shape_to_string(info.shape), nbytes);
  info.begin = *begin;
  info.end = *end;
  return info;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  MappedFile file(path);
  auto result = parse(file.bytes(), path);
  result->file_ = std::move(file);  // the mapping's address does not change when moved
  return result;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> bytes, const std::string& name) {
  auto f = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  f->path_ = name;
  f->image_ = bytes;
  const std::string& path = f->path_;

  if (bytes.size() < 8)
    fail(ErrorKind::kFormat, "{}: file is {} bytes, too short for a safetensors header (at least 8 bytes: length + "
         "JSON)", path, bytes.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const uint64_t avail = bytes.size() - 8;
  if (header_len > avail)
    fail(ErrorKind::kFormat, "{}: header length {} is larger than the {} bytes that follow it (truncated or not a "
         "safetensors file)", path, header_len, avail);
  if (header_len > kMaxHeaderBytes)
    fail(ErrorKind::kFormat, "{}: header length {} exceeds the limit of {} bytes", path, header_len, kMaxHeaderBytes);
  if (header_len < 2)
    fail(ErrorKind::kFormat, "{}: header length {} is too small for a JSON object", path, header_len);
  f->data_start_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - f->data_start_;

  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  const json header = format_detail::parse_json_strict(text, path, "safetensors header", kMaxHeaderDepth);
  if (!header.is_object())
    fail(ErrorKind::kFormat, "{}: safetensors header is a JSON {}, expected an object", path, json_type_name(header));

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        fail(ErrorKind::kFormat, "{}: '__metadata__' is a {}, expected an object of strings", path,
             json_type_name(value));
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(ErrorKind::kFormat, "{}: '__metadata__' entry {} is a {}, expected a string", path, safe_quote(mk),
               json_type_name(mv));
        f->metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    if (key.empty()) fail(ErrorKind::kFormat, "{}: a tensor has an empty name", path);
    f->tensors_.push_back(parse_entry(path, key, value, data_size));
  }

  // Sorted by data offsets; empty tensors never overlap anything.
  std::sort(f->tensors_.begin(), f->tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const TensorInfo* prev = nullptr;
  for (const auto& t : f->tensors_) {
    if (t.begin == t.end) continue;
    if (prev && t.begin < prev->end)
      fail(ErrorKind::kFormat, "{}: tensors {} (bytes [{}, {})) and {} (bytes [{}, {})) overlap", path,
           safe_quote(prev->name), prev->begin, prev->end, safe_quote(t.name), t.begin, t.end);
    prev = &t;
  }
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_.emplace(f->tensors_[i].name, i);
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail(ErrorKind::kFormat, "{}: no tensor named {}", path_, safe_quote(name));
  return view(*info);
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  // `info` may come from elsewhere; re-check the range so a view never leaves the image.
  const uint64_t data_size = image_.size() - data_start_;
  if (info.begin > info.end || info.end > data_size)
    fail(ErrorKind::kInvalidArgument, "{}: tensor {}: byte range [{}, {}) is outside the data section ({} bytes)", path_,
         safe_quote(info.name), info.begin, info.end, data_size);
  const auto nbytes = format_detail::checked_nbytes(info.shape, info.dtype);
  if (!nbytes || *nbytes != info.end - info.begin)
    fail(ErrorKind::kInvalidArgument, "{}: tensor {}: {} {} does not match its byte range [{}, {})", path_,
         safe_quote(info.name), dtype_name(info.dtype), shape_to_string(info.shape), info.begin, info.end);
  TensorView v;
  v.dtype = info.dtype;
  v.shape = info.shape;
  v.data = image_.data() + data_start_ + info.begin;
  return v;
}

}  // namespace trellis
