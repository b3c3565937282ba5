// A regular file read in place, by offset: what the checkpoint readers use so that a large
// file's bytes go straight to their tensors instead of through a buffer of the whole file.
#pragma once
#include <cstdint>
#include <string>

namespace cp2::io {

class File {
 public:
  // Throws naming `path` when it cannot be opened or is not a regular file (a pipe, a folder).
  static File open(const std::string& path);
  File(File&& o) noexcept : fd_(o.fd_), size_(o.size_), path_(std::move(o.path_)) { o.fd_ = -1; }
  File& operator=(File&&) = delete;
  File(const File&) = delete;
  ~File();
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // n bytes at offset into dst; throws naming the file on a read error or a file that ends
  // before offset + n (one that shrank while being read).
  void read_at(void* dst, uint64_t offset, uint64_t n) const;
  std::string read_at(uint64_t offset, uint64_t n) const;

 private:
  File(int fd, uint64_t size, std::string path) : fd_(fd), size_(size), path_(std::move(path)) {}
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
};

// Whether path names a regular file (not a pipe, a folder, or nothing).
bool is_regular_file(const std::string& path);

}  // namespace cp2::io
