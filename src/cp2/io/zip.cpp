#include "cp2/io/zip.h"

#ifndef CP2_NO_ZLIB
#include <ATen/Parallel.h>
#include <zlib.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cp2/common.h"

namespace cp2::io {
namespace {

uint16_t u16(const std::string& b, uint64_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(b[at]) | (static_cast<uint8_t>(b[at + 1]) << 8));
}
uint32_t u32(const std::string& b, uint64_t at) { return u16(b, at) | (static_cast<uint32_t>(u16(b, at + 2)) << 16); }
uint64_t u64(const std::string& b, uint64_t at) { return u32(b, at) | (static_cast<uint64_t>(u32(b, at + 4)) << 32); }

void le(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

uint32_t crc32_of(const void* data, size_t n) {
#ifdef CP2_NO_ZLIB
  // The zip format's CRC-32 (reflected polynomial 0xEDB88320), bitwise: only the
  // LibTorch-only GPU-check build has no zlib, and it reads and writes small files.
  uint32_t c = 0xffffffffu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
#else
  // In pieces of 1 MiB over the intra-op threads, joined by crc32_combine: one thread's
  // CRC-32 runs at ~0.6 GB/s here (zlib 1.2.13), the largest share of loading a checkpoint.
  constexpr size_t kPiece = size_t{1} << 20;
  const auto* p = static_cast<const Bytef*>(data);
  const int64_t pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
  if (pieces <= 1) return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), p, static_cast<uInt>(n)));
  std::vector<uLong> crcs(static_cast<size_t>(pieces));
  at::parallel_for(0, pieces, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const size_t at = static_cast<size_t>(k) * kPiece, len = std::min(kPiece, n - at);
      crcs[static_cast<size_t>(k)] = crc32(crc32(0L, Z_NULL, 0), p + at, static_cast<uInt>(len));
    }
  });
  uLong c = crcs[0];
  for (int64_t k = 1; k < pieces; ++k) {
    const size_t len = std::min(kPiece, n - static_cast<size_t>(k) * kPiece);
    c = crc32_combine(c, crcs[static_cast<size_t>(k)], static_cast<z_off_t>(len));
  }
  return static_cast<uint32_t>(c);
#endif
}

std::optional<ZipEntry> read_first_zip_entry(const File& file, uint64_t max_size) {
  if (file.size() < 30) return std::nullopt;
  const std::string h = file.read_at(0, 30);
  if (u32(h, 0) != 0x04034b50) return std::nullopt;
  const uint16_t flags = u16(h, 6), method = u16(h, 8), nlen = u16(h, 26), xlen = u16(h, 28);
  const uint32_t crc = u32(h, 14), comp = u32(h, 18), size = u32(h, 22);
  // Bit 3: sizes in a data descriptor after the data; 0xffffffff: in a zip64 extra field.
  if ((flags & 0x8) || method != 0 || comp != size || comp == 0xffffffffu || comp > max_size) return std::nullopt;
  const uint64_t data = 30 + uint64_t{nlen} + xlen;
  if (data + comp > file.size()) return std::nullopt;  // the whole read says why
  ZipEntry e{file.read_at(30, nlen), file.read_at(data, comp)};
  if (crc != 0 && crc32_of(e.data.data(), e.data.size()) != crc) return std::nullopt;
  return e;
}

ZipReader::ZipReader(std::string bytes, std::string path) : bytes_(std::move(bytes)), path_(std::move(path)) {
  size_ = bytes_.size();
  parse_directory();
}

ZipReader::ZipReader(File file) : path_(file.path()), size_(file.size()) {
  file_.emplace(std::move(file));
  parse_directory();
}

std::string ZipReader::fetch(uint64_t offset, uint64_t n) const {
  return file_ ? file_->read_at(offset, n) : bytes_.substr(offset, n);
}

void ZipReader::parse_directory() {
  auto fail = [&](const std::string& what) {
    throw Error(path_ + ": not a readable zip checkpoint (" + what + "); the file may be truncated or corrupt");
  };
  if (size_ < 22) fail("file has only " + std::to_string(size_) + " bytes");
  // End-of-central-directory record: the last signature within the final 64 KiB + 22 bytes.
  const uint64_t tail_start = size_ > 22 + 65535 ? size_ - 22 - 65535 : 0;
  const std::string tail = fetch(tail_start, size_ - tail_start);
  int64_t eocd = -1;  // in tail
  for (int64_t i = static_cast<int64_t>(tail.size()) - 22; i >= 0; --i) {
    if (u32(tail, i) == 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) fail("no end-of-central-directory record");
  uint64_t count = u16(tail, eocd + 10), cd_size = u32(tail, eocd + 12), cd_off = u32(tail, eocd + 16);
  if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
    // Zip64: the locator sits right before the classic record.
    const uint64_t at = tail_start + static_cast<uint64_t>(eocd);
    if (at < 20) fail("zip64 locator missing");
    const std::string loc = fetch(at - 20, 20);
    if (u32(loc, 0) != 0x07064b50) fail("zip64 locator missing");
    const uint64_t z = u64(loc, 8);
    if (size_ < 56 || z > size_ - 56) fail("zip64 directory record missing");  // not z + 56: it may wrap
    const std::string rec = fetch(z, 56);
    if (u32(rec, 0) != 0x06064b50) fail("zip64 directory record missing");
    count = u64(rec, 32);
    cd_size = u64(rec, 40);
    cd_off = u64(rec, 48);
  }
  if (cd_off > size_ || cd_size > size_ - cd_off) fail("central directory lies past the end of the file");
  const std::string b = fetch(cd_off, cd_size);
  uint64_t p = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (p + 46 > b.size() || u32(b, p) != 0x02014b50) fail("bad central directory entry " + std::to_string(i));
    Entry e;
    e.method = u16(b, p + 10);
    e.crc = u32(b, p + 16);
    e.comp_size = u32(b, p + 20);
    e.size = u32(b, p + 24);
    uint16_t nlen = u16(b, p + 28), xlen = u16(b, p + 30), clen = u16(b, p + 32);
    e.local_offset = u32(b, p + 42);
    if (p + 46 + nlen + xlen + clen > b.size()) fail("central directory entry past end of file");
    std::string name = b.substr(p + 46, nlen);
    // Zip64 extra field: only the fields saturated in the fixed header are present, in order.
    uint64_t x = p + 46 + nlen, xend = x + xlen;
    while (x + 4 <= xend) {
      uint16_t id = u16(b, x), sz = u16(b, x + 2);
      if (id == 0x0001) {
        uint64_t q = x + 4;
        auto field = [&] {  // inside this extra field, or the entry is corrupt
          if (q + 8 > x + 4 + sz || q + 8 > xend) fail("zip64 extra field of entry " + std::to_string(i) + " too short");
          const uint64_t v = u64(b, q);
          q += 8;
          return v;
        };
        if (e.size == 0xffffffffu) e.size = field();
        if (e.comp_size == 0xffffffffu) e.comp_size = field();
        if (e.local_offset == 0xffffffffu) e.local_offset = field();
      }
      x += 4 + sz;
    }
    names_.push_back(name);
    entries_[name] = e;
    p += 46 + nlen + xlen + clen;
  }
}

// A flipped bit inside a tensor's bytes leaves a zip that parses and a model that loads
// with wrong weights; the CRC-32 that every entry carries catches it. An entry's CRC
// field holds 0 where the writer skipped it (torch.save with
// torch.utils.serialization.config.save.compute_crc32 = False; an empty entry's CRC is
// 0 too): nothing to check there.
std::string_view ZipReader::verified(const std::string& name, Entry& e, std::string_view bytes) {
  if (e.checked || e.crc == 0) return bytes;
  const uint32_t found = crc32_of(bytes.data(), bytes.size());
  if (found != e.crc) {
    char msg[96];
    std::snprintf(msg, sizeof msg, "fails its CRC-32 check (stored %08x, computed %08x)", e.crc, found);
    throw Error(path_ + ": zip entry '" + name + "' (" + std::to_string(bytes.size()) + " bytes) " + msg +
                ": the file is corrupt; its tensors cannot be trusted");
  }
  e.checked = true;
  return bytes;
}

const ZipReader::Entry& ZipReader::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(path_ + ": zip entry '" + name + "' is missing");
  return it->second;
}

ZipReader::Entry& ZipReader::entry(const std::string& name) {
  return const_cast<Entry&>(static_cast<const ZipReader*>(this)->entry(name));
}

uint64_t ZipReader::size(const std::string& name) const { return entry(name).size; }

uint64_t ZipReader::data_offset(const std::string& name, const Entry& e) const {
  const std::string h = size_ >= 30 && e.local_offset <= size_ - 30 ? fetch(e.local_offset, 30) : std::string();
  if (h.size() < 30 || u32(h, 0) != 0x04034b50)
    throw Error(path_ + ": zip entry '" + name + "' has no local header (truncated or corrupt file)");
  uint64_t data = e.local_offset + 30 + u16(h, 26) + u16(h, 28);
  if (data > size_ || e.comp_size > size_ - data)
    throw Error(path_ + ": zip entry '" + name + "' needs " + std::to_string(e.comp_size) + " bytes at offset " +
                std::to_string(data) + " but the file has " + std::to_string(size_) + " bytes (truncated file)");
  return data;
}

std::string_view ZipReader::read(const std::string& name) {
  Entry& e = entry(name);
  auto cached = loaded_.find(name);
  if (cached != loaded_.end()) return verified(name, e, cached->second);
  const uint64_t data = data_offset(name, e);
  // The entry's raw bytes: a view into an in-memory zip, or read from the file into `held`.
  std::string held;
  const std::string_view raw =
      file_ ? std::string_view(held = fetch(data, e.comp_size)) : std::string_view(bytes_.data() + data, e.comp_size);
  if (e.method == 0) {
    if (e.size != e.comp_size) throw Error(path_ + ": zip entry '" + name + "' has inconsistent sizes");
    if (!file_) return verified(name, e, raw);
    return verified(name, e, loaded_.emplace(name, std::move(held)).first->second);
  }
  if (e.method != 8)
    throw Error(path_ + ": zip entry '" + name + "' uses compression method " + std::to_string(e.method) +
                "; expected 0 (stored) or 8 (deflate)");
#ifdef CP2_NO_ZLIB
  throw Error(path_ + ": zip entry '" + name + "' is deflate-compressed and this build has no zlib (torch.save writes "
              "stored entries)");
#else
  std::string out(e.size, '\0');
  z_stream zs{};
  inflateInit2(&zs, -MAX_WBITS);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&zs, Z_FINISH);
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) throw Error(path_ + ": zip entry '" + name + "' failed to inflate (corrupt data)");
  return verified(name, e, loaded_.emplace(name, std::move(out)).first->second);
#endif
}

void ZipReader::read_into(const std::string& name, void* dst, uint64_t n) {
  Entry& e = entry(name);
  if (n > e.size)
    throw Error(path_ + ": zip entry '" + name + "' holds " + std::to_string(e.size) + " bytes, asked for " +
                std::to_string(n));
  // Straight into dst: a stored entry of a file, read whole (its CRC covers all of it).
  if (file_ && e.method == 0 && n == e.size && !loaded_.count(name)) {
    if (e.size != e.comp_size) throw Error(path_ + ": zip entry '" + name + "' has inconsistent sizes");
    file_->read_at(dst, data_offset(name, e), n);
    verified(name, e, std::string_view(static_cast<const char*>(dst), n));
    return;
  }
  const std::string_view bytes = read(name);
  if (n) std::memcpy(dst, bytes.data(), n);
}

void ZipWriter::put(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n)
    throw Error(path_ + ": write failed after " + std::to_string(pos_) + " bytes (" + std::strerror(errno) + ")");
  pos_ += n;
}

void ZipWriter::add(const std::string& name, const void* data, size_t n) {
  if (pos_ + n + 4096 >= 0xffffffffull)
    throw Error(path_ + ": checkpoint would exceed 4 GiB; cp2 does not write zip64 yet");
  Rec r{name, crc32_of(data, n), n, pos_, 0};
  // Pad with an extra field (id "FB", as torch's writer) so the data starts 64-byte aligned.
  uint64_t start = pos_ + 30 + name.size() + 4;
  uint16_t pad = static_cast<uint16_t>((64 - start % 64) % 64);
  r.extra_len = static_cast<uint16_t>(4 + pad);
  std::string h;
  le(h, 0x04034b50, 4); le(h, 20, 2); le(h, 0, 2); le(h, 0, 2); le(h, 0, 2); le(h, 0x21, 2);
  le(h, r.crc, 4); le(h, n, 4); le(h, n, 4); le(h, name.size(), 2); le(h, r.extra_len, 2);
  h += name;
  le(h, 0x4246, 2); le(h, pad, 2);
  h.append(pad, 'Z');
  put(h.data(), h.size());
  put(data, n);
  recs_.push_back(r);
}

void ZipWriter::finish() {
  uint64_t cd_start = pos_;
  for (const Rec& r : recs_) {
    std::string h;
    le(h, 0x02014b50, 4); le(h, 20, 2); le(h, 20, 2); le(h, 0, 2); le(h, 0, 2); le(h, 0, 2); le(h, 0x21, 2);
    le(h, r.crc, 4); le(h, r.size, 4); le(h, r.size, 4); le(h, r.name.size(), 2); le(h, 0, 2); le(h, 0, 2);
    le(h, 0, 2); le(h, 0, 2); le(h, 0, 4); le(h, r.offset, 4);
    h += r.name;
    put(h.data(), h.size());
  }
  uint64_t cd_size = pos_ - cd_start;
  std::string e;
  le(e, 0x06054b50, 4); le(e, 0, 2); le(e, 0, 2); le(e, recs_.size(), 2); le(e, recs_.size(), 2);
  le(e, cd_size, 4); le(e, cd_start, 4); le(e, 0, 2);
  put(e.data(), e.size());
}

}  // namespace cp2::io
