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

namespace cp2::io {

// The zip format's CRC-32 of n bytes.
uint32_t crc32_of(const void* data, size_t n);

// The first entry of a zip file, read from its first bytes alone: its name and data, where it
// is stored uncompressed with its sizes in its local header (cp2's writer; not torch.save's), and
// at most `max_size` bytes; nullopt otherwise. The data is CRC-checked. Throws only when the
// file cannot be opened.
struct ZipEntry {
  std::string name, data;
};
std::optional<ZipEntry> read_first_zip_entry(const std::string& path, uint64_t max_size);

class ZipReader {
 public:
  // Takes ownership of the whole file's bytes; `path` is used in error messages.
  ZipReader(std::string bytes, std::string path);
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  // Bytes of an entry (stored entries are not copied; deflated ones are inflated once),
  // checked against the entry's CRC-32 on the first read.
  std::string_view read(const std::string& name);

 private:
  struct Entry {
    uint16_t method = 0;
    uint32_t crc = 0;
    uint64_t comp_size = 0, size = 0, local_offset = 0;
    bool checked = false;  // CRC-32 verified on an earlier read
  };
  std::string_view verified(const std::string& name, Entry& e, std::string_view bytes);
  std::string bytes_, path_;
  std::vector<std::string> names_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> inflated_;
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
