// Minimal ZIP reader/writer for PyTorch's checkpoint container (torch >= 1.6 writes
// an uncompressed zip: <archive>/data.pkl, <archive>/data/<storage key>, <archive>/version).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cp2/io/file.h"

namespace cp2::io {

// The zip format's CRC-32 of n bytes.
uint32_t crc32_of(const void* data, size_t n);

// The first entry of a zip file, read from its first bytes alone: its name and data, where it
// is stored uncompressed with its sizes in its local header (cp2's writer; not torch.save's), and
// at most `max_size` bytes; nullopt otherwise (also for a file too short to hold it). The data
// is CRC-checked.
struct ZipEntry {
  std::string name, data;
};
std::optional<ZipEntry> read_first_zip_entry(const File& file, uint64_t max_size);

class ZipReader {
 public:
  // Over the whole file's bytes (a pipe, read to its end); `path` is used in error messages.
  ZipReader(std::string bytes, std::string path);
  // Over an open regular file: only the central directory is read here; entries are read when
  // asked for, large ones straight into their destination (read_into).
  explicit ZipReader(File file);
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  // An entry's uncompressed size in bytes.
  uint64_t size(const std::string& name) const;
  // Bytes of an entry (stored entries of an in-memory zip are not copied; other entries are
  // read or inflated once), checked against the entry's CRC-32 on the first read.
  std::string_view read(const std::string& name);
  // The first n bytes of an entry into dst (n <= size(name)), CRC-checked: a stored entry of a
  // file is read into dst directly, without a buffer of its own.
  void read_into(const std::string& name, void* dst, uint64_t n);

 private:
  struct Entry {
    uint16_t method = 0;
    uint32_t crc = 0;
    uint64_t comp_size = 0, size = 0, local_offset = 0;
    bool checked = false;  // CRC-32 verified on an earlier read
  };
  void parse_directory();
  std::string fetch(uint64_t offset, uint64_t n) const;  // n bytes at offset (file or memory)
  Entry& entry(const std::string& name);
  const Entry& entry(const std::string& name) const;
  uint64_t data_offset(const std::string& name, const Entry& e) const;  // checked against the file's size
  std::string_view verified(const std::string& name, Entry& e, std::string_view bytes);
  std::string bytes_, path_;
  std::optional<File> file_;  // where entries are read from, if not from bytes_
  uint64_t size_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> loaded_;  // entries read from the file or inflated
};

class ZipWriter {
 public:
  // Writes to an already opened stream; `path` is used in error messages.
  ZipWriter(std::FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  // Stored (uncompressed) entry, its data aligned to 64 bytes as torch's writer does.
  void add(const std::string& name, const void* data, size_t n);
  void finish();

 private:
  void put(const void* p, size_t n);
  struct Rec {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
    uint16_t extra_len;
  };
  std::FILE* f_;
  std::string path_;
  uint64_t pos_ = 0;
  std::vector<Rec> recs_;
};

}  // namespace cp2::io
