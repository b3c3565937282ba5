#include "cp2/io/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "cp2/common.h"
#include "cp2/io/atomic_file.h"
#include "cp2/io/file.h"
#include "cp2/io/zip.h"

namespace cp2::io {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);  // not ios::ate: a pipe would fail to open
  if (!f) throw Error(path + ": cannot open file (" + std::strerror(errno) + ")");
  // A regular file is read once into a buffer of its size: through a growing stream, a
  // checkpoint of a few hundred MB spent most of its load in copies and page faults.
  const std::streamoff size = f.seekg(0, std::ios::end) ? static_cast<std::streamoff>(f.tellg()) : -1;
  if (size >= 0 && f.seekg(0)) {
    std::string bytes(static_cast<size_t>(size), '\0');
    if (size > 0 && !f.read(bytes.data(), size))
      throw Error(path + ": read error after " + std::to_string(f.gcount()) + " of " + std::to_string(size) + " bytes");
    return bytes;
  }
  f.clear();  // not seekable (a pipe): read it as a stream
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  return ss.str();
}

namespace {

// A checkpoint's tensors are read once and copied into a model or optimizer; they take
// LibTorch's default allocator, not cp2's caching one, so that their memory can go back to the
// system when the checkpoint is dropped. In the cache, blocks of sizes the run never asks for
// again stayed for the whole run (a resumed cpu_tiny R18 run: 934 MiB RSS against 817 fresh).
// Its bytes are to come from `has` bytes (its zip entry, the legacy file): a count they cannot
// hold is corrupt, refused before it allocates (it could ask for terabytes). `what` names the
// storage, `within` the bytes ("its entry's", "the file's").
at::Tensor transient_storage(int64_t numel, at::ScalarType dt, uint64_t has, const std::string& what,
                             const char* within) {
  if (static_cast<uint64_t>(numel) > has / c10::elementSize(dt))
    throw Error(what + " of " + std::to_string(numel) + " elements does not fit in " + within + " " +
                std::to_string(has) + " bytes (truncated or corrupt file)");
  return at::detail::empty_generic({numel}, c10::GetDefaultCPUAllocator(), c10::DispatchKeySet(c10::DispatchKey::CPU), dt,
                                   {});
}

// Large storages in 2 MiB pages where THP is "madvise" (Debian's default): faulting a 371 MB
// checkpoint's storages in 4 KiB pages took a third of its load here, and twice as long.
void advise_huge_pages(void* p, uint64_t n) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (a + kHuge - 1) & ~(kHuge - 1), hi = (a + n) & ~(kHuge - 1);
  if (hi >= lo + 2 * kHuge) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: failure is harmless
#else
  (void)p, (void)n;
#endif
}

// A storage's bytes from its zip entry, read straight into the tensor where the entry is a
// stored one in a file (cp2's and torch.save's are): no buffer of the whole file, no copy.
at::Tensor storage_from_entry(ZipReader& zip, const std::string& entry, at::ScalarType dt, int64_t numel,
                              const std::string& where) {
  at::Tensor t = transient_storage(numel, dt, zip.size(entry), where + ": storage", "its entry's");
  const uint64_t need = static_cast<uint64_t>(t.nbytes());
  advise_huge_pages(t.data_ptr(), need);
  zip.read_into(entry, t.data_ptr(), need);
  return t;
}

const py::ObjPtr& pid_field(const py::ObjPtr& pid, size_t k, const std::string& where) {
  if (pid->kind != py::Kind::Tuple || pid->items.size() <= k || pid->items[0]->s != "storage")
    throw Error(where + ": unexpected persistent id " + pid->type_name() + " (not a torch storage reference)");
  return pid->items[k];
}

// A storage reference's element count (its 5th field): an int, not negative.
int64_t pid_numel(const py::ObjPtr& pid, const std::string& where) {
  const auto& n = pid_field(pid, 4, where);
  if (n->kind != py::Kind::Int || n->i < 0)
    throw Error(where + ": storage reference with element count " +
                (n->kind == py::Kind::Int ? std::to_string(n->i) : n->type_name()) + " (corrupt file)");
  return n->i;
}

// torch.save's pickle entry: <archive>/data.pkl, one folder deep.
bool is_pickle_entry(const std::string& n) {
  return n.size() >= 9 && n.compare(n.size() - 8, 8, "data.pkl") == 0 && n.find('/') == n.size() - 9;
}

Checkpoint load_zip(ZipReader zip, const std::string& path) {
  std::string pkl;
  for (const auto& n : zip.names())
    if (is_pickle_entry(n)) pkl = n;
  if (pkl.empty())
    throw Error(path + ": zip archive has no <archive>/data.pkl entry; it is not a torch.save checkpoint");
  std::string prefix = pkl.substr(0, pkl.size() - 8);
  if (zip.has(prefix + "byteorder") && zip.read(prefix + "byteorder") != "little")
    throw Error(path + ": big-endian checkpoints are not supported");
  std::map<std::string, at::Tensor> cache;
  py::PersistentLoad load = [&](const py::ObjPtr& pid) {
    std::string cls = pid_field(pid, 1, path)->s;
    std::string key = pid_field(pid, 2, path)->s;
    int64_t numel = pid_numel(pid, path);
    auto dt = py::storage_dtype(cls, path + " (storage " + key + ")");
    auto it = cache.find(key);
    if (it == cache.end()) {
      std::string entry = prefix + "data/" + key;
      it = cache.emplace(key, storage_from_entry(zip, entry, dt, numel, path + ": " + entry)).first;
    }
    return py::tensor(it->second);
  };
  std::string_view data = zip.read(pkl);
  size_t pos = 0;
  Checkpoint c;
  c.root = py::unpickle(data, pos, load, path + ": " + pkl);
  c.format = Format::Zip;
  c.path = path;
  return c;
}

// Legacy stream (torch < 1.6 or _use_new_zipfile_serialization=False): five pickles
// (magic, protocol 1001, sys_info, the object, storage keys), then each storage's
// int64 element count and raw bytes, in key order. `head` holds the stream's first bytes: all
// of them, or (with `file`) at least its pickles, the storages then read from the file in place.
struct HeadTooShort {  // the pickles run past `head`: read more of the file (`needed` at least), try again
  uint64_t needed;
};

Checkpoint load_legacy(const std::string& head, const File* file, const std::string& path) {
  static const unsigned char kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  const uint64_t size = file ? file->size() : head.size();
  py::PersistentLoad no_load = [&](const py::ObjPtr&) -> py::ObjPtr {
    throw Error(path + ": unexpected storage reference in the legacy header");
  };
  std::map<std::string, at::Tensor> storages;
  py::PersistentLoad load = [&](const py::ObjPtr& pid) {
    std::string cls = pid_field(pid, 1, path)->s;
    std::string key = pid_field(pid, 2, path)->s;
    int64_t numel = pid_numel(pid, path);
    auto dt = py::storage_dtype(cls, path + " (storage " + key + ")");
    auto it = storages.find(key);
    if (it == storages.end())  // its bytes follow the pickles in the file
      it = storages.emplace(key, transient_storage(numel, dt, size, path + ": storage '" + key + "'", "the file's")).first;
    at::Tensor s = it->second;
    if (pid->items.size() > 5 && pid->items[5]->kind == py::Kind::Tuple) {  // (view_key, offset, view_size)
      const auto& v = pid->items[5]->items;
      if (v.size() < 3 || v[1]->kind != py::Kind::Int || v[2]->kind != py::Kind::Int || v[1]->i < 0 || v[2]->i < 0 ||
          v[1]->i > s.numel() - v[2]->i)
        throw Error(path + ": storage '" + key + "': a view past its " + std::to_string(s.numel()) +
                    " elements (corrupt file)");
      s = s.narrow(0, v[1]->i, v[2]->i);
    }
    return py::tensor(s);
  };
  size_t pos = 0;
  Checkpoint c;
  py::ObjPtr keys;
  try {
    auto magic = py::unpickle(head, pos, no_load, path);
    if (magic->kind != py::Kind::Bytes || magic->s != std::string(reinterpret_cast<const char*>(kMagic), 10))
      throw Error(path + ": not a PyTorch checkpoint (a pickle, but without torch's legacy magic number)");
    auto proto = py::unpickle(head, pos, no_load, path);
    if (proto->kind != py::Kind::Int || proto->i != 1001)
      throw Error(path + ": legacy checkpoint protocol " + std::to_string(proto->i) + ", expected 1001");
    auto sys_info = py::unpickle(head, pos, no_load, path);
    if (auto le = sys_info->get("little_endian"); le && le->kind == py::Kind::Bool && !le->b)
      throw Error(path + ": big-endian checkpoints are not supported");
    c.root = py::unpickle(head, pos, load, path);
    keys = py::unpickle(head, pos, no_load, path);
  } catch (const py::EndOfData& e) {
    // Only running out of `head` reads further: a corrupt pickle's other faults are said at
    // once, not after reading (up to) the whole file into memory.
    if (file && head.size() < size && e.needed <= size) throw HeadTooShort{e.needed};
    throw;
  }
  if (keys->kind != py::Kind::List) throw Error(path + ": legacy storage key list missing (corrupt file)");
  auto read = [&](void* dst, uint64_t at, uint64_t n) {  // the caller checked at + n <= size
    if (at + n <= head.size())
      std::memcpy(dst, head.data() + at, n);
    else
      file->read_at(dst, at, n);
  };
  for (const auto& k : keys->items) {
    auto it = storages.find(k->s);
    if (it == storages.end()) throw Error(path + ": storage '" + k->s + "' listed but never referenced");
    if (pos + 8 > size)
      throw Error(path + ": truncated: storage '" + k->s + "' header missing at byte " + std::to_string(pos));
    int64_t numel;
    read(&numel, pos, 8);
    pos += 8;
    at::Tensor& s = it->second;
    if (numel != s.numel())
      throw Error(path + ": storage '" + k->s + "' holds " + std::to_string(numel) + " elements, expected " +
                  std::to_string(s.numel()) + " (corrupt file)");
    size_t n = static_cast<size_t>(numel) * s.element_size();
    if (pos + n > size)
      throw Error(path + ": truncated: storage '" + k->s + "' needs " + std::to_string(n) + " bytes at offset " +
                  std::to_string(pos) + ", file has " + std::to_string(size) + " bytes");
    if (n) {
      advise_huge_pages(s.data_ptr(), n);
      read(s.data_ptr(), pos, n);
    }
    pos += n;
  }
  c.format = Format::Legacy;
  c.path = path;
  return c;
}

// A legacy file read in place: its pickles from a first part of the file (1 MiB, grown while
// they run past it), its storages straight into their tensors.
Checkpoint load_legacy_file(File file, const std::string& path) {
  for (uint64_t want = std::min<uint64_t>(file.size(), 1u << 20);;) {
    try {
      return load_legacy(file.read_at(0, want), &file, path);
    } catch (const HeadTooShort& h) {  // h.needed <= size: the loop ends by the whole file at most
      want = std::min(file.size(), std::max(want * 8, h.needed));
    }
  }
}

// Which container a file's first bytes start: a zip's local header, or a pickle's PROTO opcode.
enum class Container { Zip, Legacy, Other };
Container container_of(std::string_view head) {
  if (head.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return Container::Zip;
  if (head.size() >= 2 && static_cast<uint8_t>(head[0]) == 0x80 && static_cast<uint8_t>(head[1]) <= 5)
    return Container::Legacy;
  return Container::Other;
}

void flatten_into(const std::string& prefix, const py::ObjPtr& o, std::vector<std::pair<std::string, py::ObjPtr>>& out) {
  auto join = [&](const std::string& k) { return prefix.empty() ? k : prefix + "." + k; };
  if (o->kind == py::Kind::Dict) {
    for (const auto& [k, v] : o->dict) {
      std::string ks = k->kind == py::Kind::Str ? k->s : k->kind == py::Kind::Int ? std::to_string(k->i) : k->type_name();
      flatten_into(join(ks), v, out);
    }
  } else if ((o->kind == py::Kind::List || o->kind == py::Kind::Tuple) && !o->items.empty()) {
    bool has_nested = false;
    for (auto& x : o->items) has_nested |= x->kind == py::Kind::Dict || x->kind == py::Kind::Tensor;
    if (!has_nested) { out.emplace_back(prefix, o); return; }
    for (size_t k = 0; k < o->items.size(); ++k) flatten_into(join(std::to_string(k)), o->items[k], out);
  } else {
    out.emplace_back(prefix, o);
  }
}

// Every fault of a corrupt file is meant to be a cp2::Error that names it (the checks above);
// anything else that escapes (bad_alloc, a LibTorch check) still gets the file's name here.
template <class Load>
Checkpoint naming_the_file(const std::string& path, Load&& load) {
  try {
    return load();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path + ": unexpected fault while reading it (" + error_line(e) +
                "); the file is corrupt or not a PyTorch checkpoint");
  }
}

Checkpoint load_any(const std::string& path) {
  // A regular file is read in place, each storage straight into its tensor: reading the whole
  // file first held it twice (884 MB peak for a 371 MB checkpoint). A pipe is read whole.
  if (is_regular_file(path)) {
    File file = File::open(path);
    const Container kind = container_of(file.read_at(0, std::min<uint64_t>(file.size(), 4)));
    if (kind == Container::Zip) return load_zip(ZipReader(std::move(file)), path);
    if (kind == Container::Legacy) return load_legacy_file(std::move(file), path);
  }
  std::string bytes = read_file(path);
  if (bytes.empty()) throw Error(path + ": file is empty; expected a PyTorch checkpoint");
  const Container kind = container_of(bytes);
  if (kind == Container::Zip) return load_zip(ZipReader(std::move(bytes), path), path);
  if (kind == Container::Legacy) return load_legacy(bytes, nullptr, path);
  if (bytes.size() > 262 && bytes.compare(257, 5, "ustar") == 0)
    throw Error(path + ": a tar-format checkpoint (torch < 0.4); re-save it with a newer torch");
  throw Error(path + ": not a PyTorch checkpoint: expected a zip archive (torch >= 1.6) or a legacy pickle stream, "
              "found neither");
}

Checkpoint load_structure(const std::string& path) {
  // A pipe is read once, whole: its first entry alone cannot be taken from it.
  if (!is_regular_file(path)) return load_any(path);
  const auto first = read_first_zip_entry(File::open(path), uint64_t{1} << 30);
  if (!first || !is_pickle_entry(first->name)) return load_any(path);
  py::PersistentLoad meta = [&](const py::ObjPtr& pid) {
    const auto dt = py::storage_dtype(pid_field(pid, 1, path)->s, path + " (storage)");
    return py::tensor(at::empty({pid_numel(pid, path)}, at::TensorOptions().dtype(dt).device(at::kMeta)));
  };
  size_t pos = 0;
  Checkpoint c;
  c.root = py::unpickle(first->data, pos, meta, path + ": " + first->name);
  c.path = path;
  return c;
}

}  // namespace

Checkpoint load_checkpoint_structure(const std::string& path) {
  return naming_the_file(path, [&] { return load_structure(path); });
}

Checkpoint load_checkpoint(const std::string& path) {
  return naming_the_file(path, [&] { return load_any(path); });
}

std::vector<std::pair<std::string, py::ObjPtr>> flatten(const py::ObjPtr& root) {
  std::vector<std::pair<std::string, py::ObjPtr>> out;
  flatten_into("", root, out);
  return out;
}

py::ObjPtr to_state_dict(const TensorList& tensors) {
  auto d = py::dict(true);
  for (const auto& [k, t] : tensors) py::set(d, k, py::tensor(t));
  return d;
}

void save_checkpoint(const std::string& path, const py::ObjPtr& root) {
  std::vector<at::Tensor> storages;
  std::string pkl = py::pickle(root, [&](const at::Tensor& t) {
    storages.push_back(t);
    return std::to_string(storages.size() - 1);
  });
  const std::string tmp = temp_path(path);  // unique per process
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write checkpoint (" + std::strerror(errno) + ")");
  try {
    ZipWriter zip(f, path);  // errors name the checkpoint, not its temp file
    zip.add("archive/data.pkl", pkl.data(), pkl.size());
    zip.add("archive/byteorder", "little", 6);
    for (size_t k = 0; k < storages.size(); ++k)
      zip.add("archive/data/" + std::to_string(k), storages[k].data_ptr(), storages[k].numel() * storages[k].element_size());
    zip.add("archive/version", "3\n", 2);
    zip.finish();
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0)
      throw Error(path + ": cannot flush checkpoint (" + std::strerror(errno) + ", disk full?)");
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot close checkpoint (" + std::strerror(errno) + ")");
  }
  rename_into_place(tmp, path);
}

}  // namespace cp2::io
