// convert/dequantize.cpp: `trellis dequantize`: EXL3 directory -> ordinary Hugging Face directory.
//
// Streams layer by layer: memory stays near one reconstructed layer (k*n fp32 plus its output
// copy). Output goes to a hidden sibling directory that is renamed into place at the end, so a
// crash, a full disk or Ctrl-C never leaves something that looks like a complete model.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "convert/linear_shapes.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"
#include "core/mmap_file.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "exl3/linear.h"
#include "format/model_dir.h"
#include "trellis/model_tools.h"

namespace fs = std::filesystem;

namespace trellis {

namespace {

DType to_dtype(OutputDType d) {
  switch (d) {
    case OutputDType::kF16: return DType::kF16;
    case OutputDType::kBF16: return DType::kBF16;
    case OutputDType::kF32: return DType::kF32;
  }
  return DType::kF16;
}

const char* torch_dtype_name(OutputDType d) {
  switch (d) {
    case OutputDType::kF16: return "float16";
    case OutputDType::kBF16: return "bfloat16";
    case OutputDType::kF32: return "float32";
  }
  return "float16";
}

// One tensor of the output: either a copy of a source tensor or a reconstructed EXL3 layer part.
struct OutTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::string source;           // dense source tensor name (copy), or empty
  const Exl3Layer* layer = nullptr;
  bool is_bias = false;
  LinearDims dims;              // real (in, out) for EXL3 parts
  uint64_t nbytes() const { return static_cast<uint64_t>(shape_numel(shape)) * dtype_size(dtype); }
};

// Removes a directory tree on scope exit unless released.
class DirGuard {
 public:
  explicit DirGuard(std::string path) : path_(std::move(path)) {}
  ~DirGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void release() { path_.clear(); }

 private:
  std::string path_;
};

void convert_floats(const float* src, size_t n, DType dtype, std::byte* dst) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, src, n * 4); break;
    case DType::kF16: fp32_to_fp16(src, reinterpret_cast<uint16_t*>(dst), n); break;
    case DType::kBF16: fp32_to_bf16(src, reinterpret_cast<uint16_t*>(dst), n); break;
    default: fail(ErrorKind::kInternal, "unexpected output dtype");
  }
}

// Reconstructs one EXL3 layer and writes W^T (out_real x in_real) or the trimmed bias.
std::vector<std::byte> materialise(const ModelDir& model, const OutTensor& t, ThreadPool& pool) {
  std::vector<uint16_t> scratch;
  const exl3::Exl3LinearView view = model.exl3_view(*t.layer, scratch);
  const int64_t in = t.dims.in_features, out = t.dims.out_features;
  std::vector<std::byte> bytes(t.nbytes());
  if (t.is_bias) {
    std::vector<float> b(static_cast<size_t>(out));
    const auto* src = static_cast<const std::byte*>(view.bias);
    for (int64_t j = 0; j < out; ++j) {
      uint16_t h;
      std::memcpy(&h, src + 2 * j, 2);
      b[static_cast<size_t>(j)] = fp16_to_fp32(h);
    }
    convert_floats(b.data(), b.size(), t.dtype, bytes.data());
    return bytes;
  }
  // W is k x n (input rows). Row blocks of 128 are independent (the left Hadamard acts inside a
  // block, the right one along a row) and contiguous in the trellis (spec 2.6): split them over
  // threads.
  const int64_t k = view.k, n = view.n;
  std::vector<float> w(static_cast<size_t>(k * n));
  const int64_t blocks = k / 128;
  const size_t tile_row_bytes = static_cast<size_t>(n / 16) * 32 * static_cast<size_t>(view.K);
  pool.parallel_for(static_cast<size_t>(blocks), 1, [&](size_t b0, size_t b1) {
    exl3::Exl3LinearView part = view;
    part.k = static_cast<int64_t>(b1 - b0) * 128;
    part.trellis = static_cast<const std::byte*>(view.trellis) + b0 * 8 * tile_row_bytes;
    part.suh = static_cast<const std::byte*>(view.suh) + b0 * 128 * 2;
    part.bias = nullptr;
    exl3::reconstruct_weight(part, w.data() + static_cast<int64_t>(b0) * 128 * n);
  });
  // Transpose to (out, in) and drop padding, one output row at a time.
  std::vector<float> row(static_cast<size_t>(in));
  const size_t esize = dtype_size(t.dtype);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) row[static_cast<size_t>(i)] = w[static_cast<size_t>(i * n + o)];
    convert_floats(row.data(), row.size(), t.dtype, bytes.data() + static_cast<size_t>(o * in) * esize);
  }
  return bytes;
}

std::string shard_name(size_t i, size_t count) {
  if (count == 1) return "model.safetensors";
  return fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, count);
}

}  // namespace

void dequantize_model(const std::string& in_dir, const std::string& out_dir, const DequantizeOptions& options) {
  const auto model = ModelDir::open(in_dir);
  if (!model->is_exl3())
    fail(ErrorKind::kInvalidArgument, "{}: not an EXL3 model (no EXL3 layers found); nothing to dequantize", in_dir);
  const ModelConfig& config = model->config();
  const TensorStore& store = model->tensors();
  const DType out_dtype = to_dtype(options.dtype);

  const fs::path out_path = fs::path(out_dir).lexically_normal();
  if (fs::exists(out_path) && !options.overwrite)
    fail(ErrorKind::kInvalidArgument, "{}: output directory exists (use --overwrite to replace it)", out_dir);
  if (fs::weakly_canonical(out_path) == fs::weakly_canonical(fs::path(in_dir)))
    fail(ErrorKind::kInvalidArgument, "{}: output directory is the input directory", out_dir);

  // Plan the output tensors.
  std::vector<OutTensor> plan;
  bool wrote_head = false;
  for (const std::string& name : store.names()) {
    const TensorKind kind = model->kind_of(name);
    if (kind == TensorKind::kDense) {
      const TensorInfo& info = store.info(name);
      plan.push_back({name, info.dtype, info.shape, name, nullptr, false, {}});
    } else if (kind == TensorKind::kUnknown) {
      fail(ErrorKind::kFormat, "{}: tensor {} is not part of a complete EXL3 layer; cannot dequantize", in_dir, name);
    }
  }
  for (const Exl3Layer& layer : model->exl3_layers()) {
    LinearDims dims{layer.k, layer.n};
    if (auto d = llama_linear_dims(config, layer.key)) {
      if (round_up_128(d->in_features) != layer.k || round_up_128(d->out_features) != layer.n)
        fail(ErrorKind::kFormat, "{}: layer {} is {}x{} (padded in x out) but config.json implies {}x{}", in_dir,
             layer.key, layer.k, layer.n, d->in_features, d->out_features);
      dims = *d;
    } else {
      log_warn("{}: unknown layer key {}; keeping its stored (padded) shape {}x{}", in_dir, layer.key, layer.k,
               layer.n);
    }
    if (is_head_key(layer.key)) wrote_head = true;
    plan.push_back({layer.key + ".weight", out_dtype, {dims.out_features, dims.in_features}, "", &layer, false, dims});
    if (layer.has_bias) plan.push_back({layer.key + ".bias", out_dtype, {dims.out_features}, "", &layer, true, dims});
  }
  std::sort(plan.begin(), plan.end(), [](const OutTensor& a, const OutTensor& b) { return a.name < b.name; });
  for (size_t i = 1; i < plan.size(); ++i)
    if (plan[i].name == plan[i - 1].name)
      fail(ErrorKind::kFormat, "{}: tensor {} exists both as a plain tensor and as an EXL3 layer", in_dir,
           plan[i].name);

  // Split into shards.
  std::vector<std::vector<const OutTensor*>> shards(1);
  uint64_t shard_size = 0, total = 0;
  for (const OutTensor& t : plan) {
    if (shard_size > 0 && shard_size + t.nbytes() > options.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(&t);
    shard_size += t.nbytes();
    total += t.nbytes();
  }

  // Work in a hidden sibling directory; rename at the end.
  const fs::path parent = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  const fs::path tmp = parent / fmt::format(".{}.partial-{}", out_path.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) || ec)
    fail(ErrorKind::kIo, "{}: cannot create output directory: {}", tmp.string(), ec.message());
  DirGuard guard(tmp.string());

  ProgressBar bar("dequantize", total / (1 << 20), "MiB");
  uint64_t done = 0;
  ThreadPool& pool = ThreadPool::global();
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shard_name(s, shards.size());
    SafetensorsWriter writer((tmp / file).string());
    for (const OutTensor* t : shards[s]) writer.declare(t->name, t->dtype, t->shape);
    writer.begin_data();
    for (const OutTensor* t : shards[s]) {
      if (!t->source.empty()) {
        writer.write(store.view(t->source).bytes());
      } else {
        const std::vector<std::byte> bytes = materialise(*model, *t, pool);
        writer.write(bytes);
      }
      done += t->nbytes();
      if (options.progress) bar.update(done >> 20, t->name);
      weight_map[t->name] = file;
    }
    writer.commit();
  }
  if (options.progress) bar.finish();

  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    AtomicFileWriter w((tmp / "model.safetensors.index.json").string());
    const std::string text = index.dump(2) + "\n";
    w.write(text.data(), text.size());
    w.commit();
  }

  // config.json: drop quantization_config; the head is now a plain tensor of its own.
  nlohmann::json cfg = config.raw;
  cfg.erase("quantization_config");
  if (wrote_head && cfg.value("tie_word_embeddings", false)) cfg["tie_word_embeddings"] = false;
  if (cfg.contains("torch_dtype")) cfg["torch_dtype"] = torch_dtype_name(options.dtype);
  if (cfg.contains("dtype")) cfg["dtype"] = torch_dtype_name(options.dtype);
  {
    AtomicFileWriter w((tmp / "config.json").string());
    const std::string text = cfg.dump(2) + "\n";
    w.write(text.data(), text.size());
    w.commit();
  }
  for (const std::string& f : model->aux_files()) {
    if (f == "quantization_config.json") continue;
    fs::copy_file(fs::path(in_dir) / f, tmp / f, fs::copy_options::overwrite_existing, ec);
    if (ec) fail(ErrorKind::kIo, "{}: cannot copy {}: {}", out_dir, f, ec.message());
  }

  if (fs::exists(out_path)) {
    fs::remove_all(out_path, ec);
    if (ec) fail(ErrorKind::kIo, "{}: cannot replace existing directory: {}", out_dir, ec.message());
  }
  fs::rename(tmp, out_path, ec);
  if (ec) fail(ErrorKind::kIo, "{}: cannot move finished output into place: {}", out_dir, ec.message());
  guard.release();
}

}  // namespace trellis
