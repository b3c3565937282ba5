// Python pickle (protocols 0-5, the subset torch.save emits) <-> a small object tree,
// with tensors rebuilt from storages through a persistent-load callback.
// Why our own: torch::pickle_load returns None for an OrderedDict state dict and
// cannot read the legacy (pre-1.6) container, which real checkpoints use.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cp2/common.h"

namespace cp2::py {

struct Object;
using ObjPtr = std::shared_ptr<Object>;

enum class Kind { None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict, Set, Tensor, Global, Instance };

struct Object {
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                  // Str, Bytes, Global ("module.name"), Instance class
  std::vector<ObjPtr> items;                      // List, Tuple, Set, Instance args
  std::vector<std::pair<ObjPtr, ObjPtr>> dict;    // Dict (insertion order kept)
  bool ordered = false;                           // Dict came from / goes to collections.OrderedDict
  at::Tensor tensor;                              // Tensor
  ObjPtr state;                                   // Instance: BUILD state

  // Dict lookup by string key; nullptr when absent or not a dict.
  ObjPtr get(const std::string& key) const;
  std::string type_name() const;
};

ObjPtr none();
ObjPtr boolean(bool v);
ObjPtr integer(int64_t v);
ObjPtr real(double v);
ObjPtr str(std::string v);
ObjPtr list(std::vector<ObjPtr> v = {});
ObjPtr tuple(std::vector<ObjPtr> v = {});
ObjPtr dict(bool ordered = false);
ObjPtr tensor(at::Tensor t);
// Appends key/value to a dict object.
void set(const ObjPtr& d, const std::string& key, ObjPtr value);

// Maps a persistent id (a tuple such as ('storage', torch.FloatStorage, key, loc, numel))
// to the storage object, here a 1-D tensor over the whole storage.
using PersistentLoad = std::function<ObjPtr(const ObjPtr& pid)>;

// What unpickle throws where `data` ends before the pickle does (any other fault is a plain
// Error): a reader holding only a file's first part then knows to read more of it, up to
// `needed` bytes (the offset at which the next read in `data` would have ended).
struct EndOfData : Error {
  EndOfData(const std::string& msg, uint64_t needed_) : Error(msg), needed(needed_) {}
  uint64_t needed;
};

// Unpickles one object starting at `pos` in `data`; advances `pos` past STOP.
// `where` names the file/entry in error messages.
ObjPtr unpickle(std::string_view data, size_t& pos, const PersistentLoad& load, const std::string& where);

// Storage dtype for a torch storage class name ("FloatStorage" ...); throws naming `where`.
at::ScalarType storage_dtype(const std::string& storage_class, const std::string& where);
std::string storage_class(at::ScalarType t);

// Pickles `obj` (protocol 2). Each tensor is written as its own storage: `save_storage`
// receives the contiguous tensor and returns its key.
std::string pickle(const ObjPtr& obj, const std::function<std::string(const at::Tensor&)>& save_storage);

}  // namespace cp2::py
