// core/mmap_file.h: read-only memory-mapped files and atomic file writing.
#pragma once

#include <cstddef>
#include <cstdio>
#include <span>
#include <string>

namespace trellis {

// A read-only mapping of a whole file. Empty files map to an empty span. Errors name the path.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Writes a file under a temporary name ("<path>.tmp-<pid>") and renames it over `path` on
// commit(); destroyed without commit(), it removes the temporary. Every write checks for errors
// (disk full gives kIo naming the path).
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }
  size_t bytes_written() const { return written_; }
  void commit();

 private:
  std::string path_, tmp_path_;
  std::FILE* file_ = nullptr;
  size_t written_ = 0;
};

// Reads a whole (small) file into a string. kIo error naming the path on failure.
std::string read_text_file(const std::string& path);

}  // namespace trellis
