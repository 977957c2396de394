// format/tensor_store.cpp: the tensors of a model directory, from one file or many shards.
//
// Sources, in order of preference: model.safetensors.index.json (the weight map is the truth,
// and every shard must agree with it), model.safetensors, every *.safetensors in the
// directory. A tensor name must resolve to exactly one file.
#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/error.h"
#include "core/log.h"
#include "core/mmap_file.h"
#include "format/format_util.h"
#include "format/safetensors.h"

namespace trellis {

namespace {

namespace fs = std::filesystem;
using format_detail::json_type_name;
using format_detail::safe_quote;
using nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr int kMaxIndexDepth = 16;

bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

bool is_plain_regular_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

SafetensorsIndex parse_safetensors_index(const std::string& text, const std::string& path) {
  const json root = format_detail::parse_json_strict(text, path, "safetensors index", kMaxIndexDepth);
  if (!root.is_object())
    fail(ErrorKind::kFormat, "{}: index is a JSON {}, expected an object with 'weight_map'", path, json_type_name(root));
  SafetensorsIndex index;

  if (const auto md = root.find("metadata"); md != root.end() && !md->is_null()) {
    if (!md->is_object())
      fail(ErrorKind::kFormat, "{}: 'metadata' is a {}, expected an object", path, json_type_name(*md));
    if (const auto ts = md->find("total_size"); ts != md->end() && !ts->is_null()) {
      if (ts->is_number_unsigned()) index.total_size = ts->get<uint64_t>();
      else if (ts->is_number_integer() && ts->get<int64_t>() >= 0) index.total_size = ts->get<int64_t>();
      else
        fail(ErrorKind::kFormat, "{}: 'metadata.total_size' is {} {}, expected a non-negative integer", path,
             json_type_name(*ts), safe_quote(ts->dump(), 40));
    }
  }

  const auto wm = root.find("weight_map");
  if (wm == root.end())
    fail(ErrorKind::kFormat, "{}: 'weight_map' is missing (expected an object: tensor name -> shard file)", path);
  if (!wm->is_object())
    fail(ErrorKind::kFormat, "{}: 'weight_map' is a {}, expected an object of tensor name -> shard file", path,
         json_type_name(*wm));
  if (wm->empty()) fail(ErrorKind::kFormat, "{}: 'weight_map' is empty (expected at least one tensor)", path);
  std::set<std::string> files;
  for (const auto& [name, file] : wm->items()) {
    if (name.empty()) fail(ErrorKind::kFormat, "{}: 'weight_map' has an empty tensor name", path);
    if (!file.is_string())
      fail(ErrorKind::kFormat, "{}: 'weight_map' entry for tensor {} is a {}, expected a file name string", path,
           safe_quote(name), json_type_name(file));
    const auto& f = file.get_ref<const std::string&>();
    if (!is_plain_file_name(f))
      fail(ErrorKind::kFormat, "{}: 'weight_map' maps tensor {} to {}, expected a file name in the same directory",
           path, safe_quote(name), safe_quote(f));
    index.weight_map.emplace(name, f);
    files.insert(f);
  }
  index.files.assign(files.begin(), files.end());
  return index;
}

std::unique_ptr<TensorStore> TensorStore::open_dir(const std::string& dir) {
  auto store = std::unique_ptr<TensorStore>(new TensorStore());
  store->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(ErrorKind::kIo, "{}: not a directory", dir);
  const fs::path root(dir);
  auto& files = store->files_;
  auto& where = store->where_;

  const fs::path index_path = root / kIndexName;
  if (fs::exists(index_path, ec)) {
    const std::string ipath = index_path.string();
    const SafetensorsIndex index = parse_safetensors_index(read_text_file(ipath), ipath);
    std::map<std::string, size_t> file_slot;
    for (const auto& name : index.files) {
      const fs::path shard = root / name;
      if (!is_plain_regular_file(shard))
        fail(ErrorKind::kFormat, "{}: lists shard {}, which does not exist in {} (or is not a regular file)", ipath,
             safe_quote(name), dir);
      file_slot[name] = files.size();
      files.push_back(SafetensorsFile::open(shard.string()));
    }
    // Every tensor in a shard must be mapped to that shard (or, with a warning, not mapped).
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string base = fs::path(files[i]->path()).filename().string();
      for (const auto& t : files[i]->tensors()) {
        const auto it = index.weight_map.find(t.name);
        if (it != index.weight_map.end() && it->second != base)
          fail(ErrorKind::kFormat, "{}: tensor {} is stored in {} but the index maps it to {}", ipath, safe_quote(t.name),
               safe_quote(base), safe_quote(it->second));
        if (it == index.weight_map.end()) {
          log_warn("{}: tensor {} in shard {} is not listed in the index; using it anyway", ipath, safe_quote(t.name),
                   safe_quote(base));
          if (const auto prev = where.find(t.name); prev != where.end())
            fail(ErrorKind::kFormat, "{}: tensor {} is stored in two shards, {} and {}", ipath, safe_quote(t.name),
                 safe_quote(fs::path(files[prev->second]->path()).filename().string()), safe_quote(base));
          where.emplace(t.name, i);
        }
      }
    }
    // Every mapped tensor must be present in its shard.
    for (const auto& [name, file] : index.weight_map) {
      const size_t slot = file_slot.at(file);
      if (!files[slot]->find(name))
        fail(ErrorKind::kFormat, "{}: maps tensor {} to {}, but that shard has no such tensor", ipath, safe_quote(name),
             safe_quote(file));
      where.emplace(name, slot);
    }
    return store;
  }

  std::vector<std::string> paths;
  if (is_plain_regular_file(root / kSingleName)) {
    paths.push_back((root / kSingleName).string());
  } else {
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& p = it->path();
      if (p.extension() == ".safetensors" && is_plain_regular_file(p)) paths.push_back(p.string());
    }
    if (ec) fail(ErrorKind::kIo, "{}: cannot list directory: {}", dir, ec.message());
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty())
    fail(ErrorKind::kFormat, "{}: no safetensors files (expected {}, {} or *.safetensors)", dir, kSingleName,
         kIndexName);
  for (const auto& p : paths) {
    files.push_back(SafetensorsFile::open(p));
    const size_t slot = files.size() - 1;
    for (const auto& t : files[slot]->tensors()) {
      const auto [it, inserted] = where.emplace(t.name, slot);
      if (!inserted)
        fail(ErrorKind::kFormat, "{}: tensor {} is stored in two files, {} and {}", dir, safe_quote(t.name),
             safe_quote(fs::path(files[it->second]->path()).filename().string()),
             safe_quote(fs::path(p).filename().string()));
    }
  }
  return store;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, slot] : where_) out.push_back(name);
  return out;  // std::map iterates in sorted order
}

bool TensorStore::contains(const std::string& name) const { return where_.count(name) != 0; }

const TensorInfo& TensorStore::info(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail(ErrorKind::kFormat, "{}: no tensor named {}", dir_, safe_quote(name));
  return *files_[it->second]->find(name);
}

TensorView TensorStore::view(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail(ErrorKind::kFormat, "{}: no tensor named {}", dir_, safe_quote(name));
  return files_[it->second]->view(name);
}

std::string TensorStore::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail(ErrorKind::kFormat, "{}: no tensor named {}", dir_, safe_quote(name));
  return std::filesystem::path(files_[it->second]->path()).filename().string();
}

}  // namespace trellis
